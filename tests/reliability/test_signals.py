"""Processes dying under a training run: a loader worker killed (SIGKILL), and Ctrl-C
(SIGINT) to the training process; either way the run ends quickly with a message and leaves
no process behind."""
import os
import re
import signal
import subprocess
import time

import pytest
from reliability_cli import (
    LiveRun,
    assert_all_gone,
    cmdline,
    descendants,
    loader_workers,
    train_args,
    write_dataset,
)

# Long enough never to finish during the test (it is stopped after a few iterations).
LONG_RUN = ("train.iters_at_batch16=200",)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_dataset(str(root))
    return root


def start_training(data_root, tmp_path, until):
    live = LiveRun("detection_train.py", train_args(data_root, tmp_path / "out", *LONG_RUN),
                   tmp_path, tmp_path / "stderr.txt")
    live.wait_for(until)
    return live


def test_killed_loader_worker_stops_the_run_naming_it(data_root, tmp_path):
    live = start_training(data_root, tmp_path, r"iter 3/")
    try:
        workers = loader_workers(live.proc.pid)
        assert len(workers) == 1, [(p, cmdline(p)) for p in descendants(live.proc.pid)]
        children = descendants(live.proc.pid)
        os.kill(workers[0], signal.SIGKILL)
        start = time.monotonic()
        code, stdout, stderr = live.finish(timeout=30)
        seconds = time.monotonic() - start
    finally:
        live.kill()
    assert code == 1, stderr[-3000:]
    assert seconds < 10
    assert "Traceback" not in stdout + stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert re.search(rf"loader worker 0 \(pid {workers[0]}\) was killed by signal SIGKILL",
                     errors[0])
    assert_all_gone(children)


def test_ctrl_c_exits_and_leaves_no_child_process(data_root, tmp_path):
    live = start_training(data_root, tmp_path, r"checkpoint: ")  # after iteration 4
    try:
        children = descendants(live.proc.pid)
        assert loader_workers(live.proc.pid) and len(children) >= 3  # forkserver, worker, ...
        os.kill(live.proc.pid, signal.SIGINT)
        try:
            code, stdout, stderr = live.finish(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 30 s after SIGINT; stderr:\n{live.stderr()[-3000:]}")
    finally:
        live.kill()
    assert code == 130, stderr[-3000:]
    assert "Traceback" not in stdout + stderr
    assert re.search(r"error: interrupted \(SIGINT\) at iteration \d+; the last checkpoint is "
                     r"\S+iter_\d+ \(continue with --resume\)", stderr), stderr
    assert_all_gone(children)
