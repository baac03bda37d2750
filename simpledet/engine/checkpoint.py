"""Iteration checkpoints, written atomically.

Layout::

    <experiment_dir>/checkpoints/iter_0000010/
        model.params       mx.nd.save dict, 'arg:<name>' / 'aux:<name>' (MXNet's format)
        optimizer.states   the optimizer (updater or kvstore) state, e.g. SGD momentum
        state.json         {"iteration": completed iterations, "loader": loader position,
                            "files": {file name: bytes written}, ...}

A checkpoint is written into a hidden temporary folder, each file flushed to disk (fsync), and
renamed into place (os.replace), so a run killed mid-write never leaves a half checkpoint that
looks complete; leftover temporary folders are ignored (and removed by the next save). A write
that fails (disk full) removes the temporary folder and raises :class:`CheckpointWriteError`;
the earlier checkpoints stay as they were.

state.json also records the size of every other file ("files"), so a file truncated later on
(a crash before the data reached the disk, a copy cut short) is recognized when the checkpoint
is loaded; :func:`load_latest_checkpoint` then falls back to the newest complete checkpoint.
"""
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass

CHECKPOINT_DIR = "checkpoints"
PARAMS_FILE = "model.params"
OPTIMIZER_FILE = "optimizer.states"
STATE_FILE = "state.json"
FORMAT_VERSION = 1
_NAME = re.compile(r"^iter_(\d+)$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or could not be written; the message names the
    folder."""


class UnreadableCheckpointError(CheckpointError):
    """A checkpoint folder that exists but does not load (truncated or malformed file).

    Attributes:
        folder: the checkpoint folder.
        reason: what is wrong, naming the file, e.g. 'model.params: 1000 bytes, 14423812
            written (truncated)'.
    """

    def __init__(self, folder, reason):
        super().__init__(f"{folder}: unreadable checkpoint ({reason})")
        self.folder, self.reason = folder, reason


class CheckpointWriteError(CheckpointError, OSError):
    """Writing a checkpoint failed (e.g. no space left); nothing of it was left behind. The
    message says why, how much space is free and which earlier checkpoint is intact."""


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: its folder.
        iteration: completed training iterations.
        arg_params / aux_params: name -> mx.nd.NDArray.
        optimizer_file: path of the optimizer state file (None when absent).
        state: the state.json payload (loader position, schedule, seed, ...).
    """

    path: str
    iteration: int
    arg_params: dict
    aux_params: dict
    optimizer_file: str | None
    state: dict


def checkpoint_root(experiment_dir):
    return os.path.join(str(experiment_dir), CHECKPOINT_DIR)


def checkpoint_name(iteration):
    return f"iter_{int(iteration):07d}"


def save_params(path, arg_params, aux_params):
    """Saves parameters in MXNet's checkpoint format ('arg:' / 'aux:' prefixed keys)."""
    import mxnet as mx

    payload = {f"arg:{k}": v for k, v in arg_params.items()}
    payload.update({f"aux:{k}": v for k, v in aux_params.items()})
    mx.nd.save(str(path), payload)


def split_prefixed(loaded):
    """Splits an mx.nd.load dict into (arg_params, aux_params, plain): 'arg:'/'aux:' keys lose
    their prefix; keys without a prefix go to ``plain``."""
    arg_params, aux_params, plain = {}, {}, {}
    for key, value in loaded.items():
        kind, sep, name = key.partition(":")
        if sep and kind == "arg":
            arg_params[name] = value
        elif sep and kind == "aux":
            aux_params[name] = value
        else:
            plain[key] = value
    return arg_params, aux_params, plain


def save_checkpoint(experiment_dir, iteration, arg_params, aux_params, state,
                    write_optimizer_states=None):
    """Writes checkpoint ``iter_<iteration>`` atomically.

    Args:
        experiment_dir: the experiment folder (checkpoints go to its checkpoints/).
        iteration: completed iterations.
        arg_params / aux_params: name -> NDArray.
        state: JSON-serializable dict (loader position etc.); "iteration" is added.
        write_optimizer_states: callable(path) writing the optimizer state, or None.

    Returns:
        the checkpoint folder.
    """
    import mxnet as mx

    root = checkpoint_root(experiment_dir)
    final = os.path.join(root, checkpoint_name(iteration))
    previous = list_checkpoints(experiment_dir)
    tmp, writing = None, None
    try:
        os.makedirs(root, exist_ok=True)
        _remove_stale_temps(root)
        tmp = tempfile.mkdtemp(dir=root, prefix=f".{checkpoint_name(iteration)}.tmp-")
        writing = PARAMS_FILE
        save_params(os.path.join(tmp, PARAMS_FILE), arg_params, aux_params)
        files = [PARAMS_FILE]
        if write_optimizer_states is not None:
            writing = OPTIMIZER_FILE
            write_optimizer_states(os.path.join(tmp, OPTIMIZER_FILE))
            files.append(OPTIMIZER_FILE)
        sizes = {}
        for name in files:
            writing = name
            sizes[name] = _fsync(os.path.join(tmp, name))
        writing = STATE_FILE
        payload = dict(state, iteration=int(iteration), format=FORMAT_VERSION, files=sizes)
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            json.dump(payload, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        writing = None
        if os.path.exists(final):  # re-saving an iteration: move the old one aside first
            trash = tempfile.mkdtemp(dir=root, prefix=f".{checkpoint_name(iteration)}.old-")
            os.replace(final, os.path.join(trash, "old"))
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
        try:  # the rename itself; best effort (some file systems cannot sync a folder)
            _fsync(root)
        except OSError:
            pass
    except (OSError, mx.base.MXNetError) as err:
        message = _write_failure(final, root, writing, err, previous)  # free space before cleanup
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointWriteError(message) from err
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _fsync(path):
    """Flushes a file (or a folder's entries) to the disk; returns its size in bytes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        return os.fstat(fd).st_size
    finally:
        os.close(fd)


def error_reason(err):
    """One line saying what went wrong: strerror for OS errors, the final check message of an
    MXNet error (its text starts with a C++ traceback), else the first line."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    if type(err).__name__ == "MXNetError":
        return lines[-1].rsplit(": ", 1)[-1]
    return lines[0]


def _write_failure(final, root, writing, err, previous):
    """The message of a failed checkpoint write."""
    where = f"writing {writing}; " if writing else ""
    try:
        free = f"{shutil.disk_usage(root).free / 2 ** 20:.1f} MB free there"
    except OSError:
        free = "free space unknown"
    kept = (f"the last complete checkpoint {previous[-1][1]} is intact (continue from it with "
            "--resume once there is space)" if previous else "there is no earlier checkpoint")
    return f"cannot write checkpoint {final}: {error_reason(err)} ({where}{free}); {kept}"


def _remove_stale_temps(root):
    for name in os.listdir(root):
        if name.startswith(".iter_"):
            shutil.rmtree(os.path.join(root, name), ignore_errors=True)


def list_checkpoints(experiment_dir):
    """Complete checkpoints as [(iteration, folder)], oldest first."""
    root = checkpoint_root(experiment_dir)
    if not os.path.isdir(root):
        return []
    found = []
    for name in os.listdir(root):
        match = _NAME.match(name)
        folder = os.path.join(root, name)
        if match and os.path.isfile(os.path.join(folder, STATE_FILE)):
            found.append((int(match.group(1)), folder))
    return sorted(found)


def find_checkpoint(experiment_dir, iteration=None):
    """The folder of checkpoint ``iteration`` (the latest when None).

    Raises:
        CheckpointError: none exists, or not that iteration (the message lists those present).
    """
    found = list_checkpoints(experiment_dir)
    if not found:
        raise CheckpointError(f"no checkpoint in {checkpoint_root(experiment_dir)}; train first "
                              "(python detection_train.py --config ...)")
    if iteration is None:
        return found[-1][1]
    for it, folder in found:
        if it == int(iteration):
            return folder
    raise CheckpointError(f"no checkpoint for iteration {iteration} in "
                          f"{checkpoint_root(experiment_dir)}; available: "
                          f"{[it for it, _ in found]}")


def load_checkpoint(folder):
    """Loads a checkpoint folder written by :func:`save_checkpoint`.

    Raises:
        UnreadableCheckpointError: a file is missing, malformed, or of another size than
            state.json recorded (truncated); the reason names the file.
    """
    import mxnet as mx

    state_path = os.path.join(folder, STATE_FILE)
    params_path = os.path.join(folder, PARAMS_FILE)
    reading = STATE_FILE
    try:
        with open(state_path) as f:
            state = json.load(f)
        if not isinstance(state, dict) or "iteration" not in state:
            raise ValueError("no 'iteration' entry")
        for name, size in state.get("files", {}).items():
            reading = name
            actual = os.path.getsize(os.path.join(folder, name))
            if actual != size:
                raise ValueError(f"{actual} bytes, {size} written (truncated or changed)")
        reading = PARAMS_FILE
        loaded = mx.nd.load(params_path)
    except (OSError, ValueError, mx.base.MXNetError) as err:
        raise UnreadableCheckpointError(folder, f"{reading}: {error_reason(err)}") from None
    arg_params, aux_params, plain = split_prefixed(loaded)
    if plain:
        raise CheckpointError(f"{params_path}: keys without 'arg:'/'aux:' prefix: "
                              f"{sorted(plain)[:5]}")
    optimizer_file = os.path.join(folder, OPTIMIZER_FILE)
    return Checkpoint(path=folder, iteration=int(state["iteration"]), arg_params=arg_params,
                      aux_params=aux_params,
                      optimizer_file=optimizer_file if os.path.isfile(optimizer_file) else None,
                      state=state)


def load_latest_checkpoint(experiment_dir):
    """The newest checkpoint that loads, skipping newer ones that do not.

    Returns:
        (Checkpoint, [UnreadableCheckpointError of each newer checkpoint skipped]).

    Raises:
        CheckpointError: there is no checkpoint, or none loads (the message says why for each).
    """
    found = list_checkpoints(experiment_dir)
    if not found:
        find_checkpoint(experiment_dir)  # raises the "no checkpoint" error
    skipped = []
    for _, folder in reversed(found):
        try:
            return load_checkpoint(folder), skipped
        except UnreadableCheckpointError as err:
            skipped.append(err)
    reasons = "; ".join(f"{os.path.basename(e.folder)}: {e.reason}" for e in skipped[:3])
    raise CheckpointError(f"no checkpoint in {checkpoint_root(experiment_dir)} loads ({reasons}"
                          f"{'; ...' if len(skipped) > 3 else ''})")
