"""What the reliability tests share: a tiny COCO dataset, the real CLIs in a subprocess on the
shapes FPN config shrunk by ``--set`` (64x80 input, one image per iteration, 32 iterations of
a few tens of milliseconds), and helpers to watch a run and its process tree.
"""
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "shapes" / "faster_fpn.py"
CLASS_NAMES = ("circle", "square")
CATEGORY_IDS = (3, 7)  # not 1..K: the json ids are mapped to labels
HEIGHT, WIDTH = 64, 80
MAX_ITER = 32  # train.iters_at_batch16=2 at one image per iteration
CHECKPOINT_INTERVAL = 4


def write_dataset(root, split="train", count=4, seed=0):
    """Writes ``count`` noise images (JPEG, 64x80) with one or two boxes each, COCO layout.

    Returns:
        (annotation file, image folder, parsed json content).
    """
    image_dir = os.path.join(root, "images", split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        pixels = rng.integers(0, 255, size=(HEIGHT, WIDTH, 3), dtype=np.uint8)
        name = f"{image_id:03d}.jpg"
        cv2.imwrite(os.path.join(image_dir, name), pixels)
        images.append({"id": image_id, "file_name": name, "height": HEIGHT, "width": WIDTH})
        for k in range(1 + image_id % 2):
            box = [4.0 + 30 * k, 6.0 + 10 * k, 28.0, 24.0]
            annotations.append({"id": 100 + len(annotations), "image_id": image_id,
                                "category_id": CATEGORY_IDS[k], "bbox": box,
                                "area": box[2] * box[3], "iscrowd": 0})
    content = {"images": images, "annotations": annotations,
               "categories": [{"id": i, "name": n} for i, n in zip(CATEGORY_IDS, CLASS_NAMES)]}
    ann_file = os.path.join(root, "annotations", f"instances_{split}.json")
    write_json(ann_file, content)
    return ann_file, image_dir, content


def write_json(path, content):
    with open(path, "w") as f:
        json.dump(content, f)


def train_args(data_root, output_root, *overrides):
    """Arguments of detection_train.py (and detection_test.py) for the tiny setup."""
    return ["--config", str(CONFIG), "--set", "dataset.synthetic=none",
            f"dataset.root={data_root}", "dataset.train_split=train", "dataset.val_split=val",
            f"dataset.class_names={CLASS_NAMES!r}", f"input.short={HEIGHT}",
            f"input.long={WIDTH}", "train.images_per_device=1", "test.images_per_device=1",
            "train.iters_at_batch16=2", "train.lr_steps_at_batch16=()", "train.warmup_iters=0",
            "train.log_interval=1", f"train.checkpoint_interval={CHECKPOINT_INTERVAL}",
            f"output_root={output_root}", *overrides]


def experiment_dir(output_root):
    return os.path.join(str(output_root), "faster_fpn")


def _interruptible():
    """In the child before exec: SIGINT back to its default, as under a terminal. A shell runs
    background jobs (``cmd &``, CI scripts under nohup) with SIGINT ignored, children inherit
    that, and Python then installs no KeyboardInterrupt handler: Ctrl-C could not be tested."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli_env():
    # One OpenMP thread: the machine is shared, and the tiny graph gains nothing from more.
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def script_path(script):
    return str(REPO / script)


def run_cli(script, args, cwd, timeout=120):
    """Runs a CLI (a path, or a script name at the repository root) to completion."""
    path = script if os.path.isabs(str(script)) else script_path(script)
    return subprocess.run([sys.executable, str(path), *map(str, args)], cwd=str(cwd),
                          capture_output=True, text=True, timeout=timeout, check=False,
                          env=cli_env())


def assert_one_line_error(proc, *needles, code=2):
    """The run failed with exit code ``code``, one 'error: ...' line naming ``needles`` on
    stderr, and no Python traceback anywhere. Returns the error line."""
    output = proc.stdout + proc.stderr
    assert proc.returncode == code, (proc.returncode, output[-3000:])
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


class LiveRun:
    """A CLI started in the background; its stdout lines are collected by a thread (stderr
    goes to a file)."""

    def __init__(self, script, args, cwd, stderr_path):
        self._stderr = open(stderr_path, "w")
        self.stderr_path = stderr_path
        self.proc = subprocess.Popen([sys.executable, script_path(script), *map(str, args)],
                                     cwd=str(cwd), stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True, env=cli_env(),
                                     preexec_fn=_interruptible)
        self.lines = []
        self._queue = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern, timeout=60.0):
        """Collects lines until one matches ``pattern`` (a regex); returns the match."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} within {timeout} s; "
                                     f"last lines: {self.lines[-5:]}") from None
            if line is None:
                raise AssertionError(f"the run ended (code {self.proc.wait()}) before a line "
                                     f"matching {pattern!r}; last lines: {self.lines[-5:]}; "
                                     f"stderr: {self.stderr()[-2000:]}")
            self.lines.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def finish(self, timeout=60.0):
        """Waits for the exit; returns (exit code, stdout, stderr)."""
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5.0)
        while not self._queue.empty():
            line = self._queue.get_nowait()
            if line is not None:
                self.lines.append(line)
        self._stderr.close()
        return code, "\n".join(self.lines), self.stderr()

    def stderr(self):
        with open(self.stderr_path) as f:
            return f.read()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._stderr.close()


# ---- process trees ----------------------------------------------------------------------

def _stat(pid):
    """(state, parent pid) of a process, or None when it does not exist."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def descendants(pid):
    """Pids of every live process below ``pid``."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = _stat(int(name))
            if stat is not None and stat[0] != "Z":
                parents[int(name)] = stat[1]
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def loader_workers(pid):
    """Pids of the loader worker processes of a training process: children of its
    multiprocessing forkserver."""
    servers = [p for p in descendants(pid) if "forkserver" in cmdline(p)
               and _stat(p) is not None and _stat(p)[1] == pid]
    return [p for p in descendants(pid) if _stat(p) is not None and _stat(p)[1] in servers]


def running(pid):
    """Whether a process exists and is not a zombie (its new parent may reap it late)."""
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def assert_all_gone(pids, within=10.0):
    deadline = time.monotonic() + within
    while True:
        alive = [p for p in pids if running(p)]
        if not alive:
            return
        assert time.monotonic() < deadline, [(p, cmdline(p)) for p in alive]
        time.sleep(0.1)
