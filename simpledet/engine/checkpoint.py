"""Iteration checkpoints, written atomically.

Layout::

    <experiment_dir>/checkpoints/iter_0000010/
        model.params       mx.nd.save dict, 'arg:<name>' / 'aux:<name>' (MXNet's format)
        optimizer.states   the optimizer (updater or kvstore) state, e.g. SGD momentum
        state.json         {"iteration": completed iterations, "loader": loader position, ...}

A checkpoint is written into a hidden temporary folder and renamed into place (os.replace), so
a run killed mid-write never leaves a half checkpoint that looks complete; leftover temporary
folders are ignored (and removed by the next save).
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
    """A checkpoint is missing or unreadable; the message names the folder."""


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
    root = checkpoint_root(experiment_dir)
    os.makedirs(root, exist_ok=True)
    _remove_stale_temps(root)
    final = os.path.join(root, checkpoint_name(iteration))
    tmp = tempfile.mkdtemp(dir=root, prefix=f".{checkpoint_name(iteration)}.tmp-")
    try:
        save_params(os.path.join(tmp, PARAMS_FILE), arg_params, aux_params)
        if write_optimizer_states is not None:
            write_optimizer_states(os.path.join(tmp, OPTIMIZER_FILE))
        payload = dict(state, iteration=int(iteration), format=FORMAT_VERSION)
        with open(os.path.join(tmp, STATE_FILE), "w") as f:
            json.dump(payload, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        if os.path.exists(final):  # re-saving an iteration: move the old one aside first
            trash = tempfile.mkdtemp(dir=root, prefix=f".{checkpoint_name(iteration)}.old-")
            os.replace(final, os.path.join(trash, "old"))
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


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
    """Loads a checkpoint folder written by :func:`save_checkpoint`."""
    import mxnet as mx

    state_path = os.path.join(folder, STATE_FILE)
    params_path = os.path.join(folder, PARAMS_FILE)
    try:
        with open(state_path) as f:
            state = json.load(f)
        loaded = mx.nd.load(params_path)
    except (OSError, ValueError, mx.base.MXNetError) as err:
        raise CheckpointError(f"{folder}: unreadable checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from None
    arg_params, aux_params, plain = split_prefixed(loaded)
    if plain:
        raise CheckpointError(f"{params_path}: keys without 'arg:'/'aux:' prefix: "
                              f"{sorted(plain)[:5]}")
    optimizer_file = os.path.join(folder, OPTIMIZER_FILE)
    return Checkpoint(path=folder, iteration=int(state["iteration"]), arg_params=arg_params,
                      aux_params=aux_params,
                      optimizer_file=optimizer_file if os.path.isfile(optimizer_file) else None,
                      state=state)
