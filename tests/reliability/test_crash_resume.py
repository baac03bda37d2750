"""A training run killed hard (``kill -9``) and a checkpoint damaged on disk: ``--resume``
continues exactly, from the last checkpoint that is complete."""
import os
import random
import re
import shutil
import signal

import mxnet as mx
import numpy as np
import pytest
from reliability_cli import (
    CHECKPOINT_INTERVAL,
    MAX_ITER,
    LiveRun,
    assert_all_gone,
    assert_one_line_error,
    descendants,
    experiment_dir,
    run_cli,
    train_args,
    write_dataset,
)

from simpledet.engine import checkpoint as ckpt
from simpledet.utils.plot import read_metrics


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_dataset(str(root))
    write_dataset(str(root), "val", count=2, seed=1)
    return root


def losses_by_iteration(output_root):
    """{iteration: (lr, losses)} of metrics.jsonl (a resumed run's later record wins)."""
    records = read_metrics(os.path.join(experiment_dir(output_root), "metrics.jsonl"))
    return {r["iteration"]: (r["lr"], r["losses"]) for r in records}


def assert_every_checkpoint_loads(output_root):
    """Every iter_* folder loads: parameters, state and optimizer state."""
    root = ckpt.checkpoint_root(experiment_dir(output_root))
    folders = sorted(n for n in os.listdir(root) if n.startswith("iter_"))
    assert folders
    for name in folders:
        loaded = ckpt.load_checkpoint(os.path.join(root, name))
        assert loaded.arg_params and loaded.optimizer_file, name
        updater = mx.optimizer.get_updater(mx.optimizer.SGD(momentum=0.9))
        with open(loaded.optimizer_file, "rb") as f:
            updater.set_states(f.read())
    return folders


def final_params(output_root):
    loaded = ckpt.load_checkpoint(ckpt.find_checkpoint(experiment_dir(output_root), MAX_ITER))
    return {k: v.asnumpy() for k, v in {**loaded.arg_params, **loaded.aux_params}.items()}


def test_kill_9_then_resume_logs_the_losses_of_an_uninterrupted_run(data_root, tmp_path):
    straight = tmp_path / "straight"
    proc = run_cli("detection_train.py", train_args(data_root, straight), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # Killed after some iteration past the first checkpoint (the exact point varies with the
    # machine's speed: it may land during a checkpoint write).
    kill_at = random.randint(CHECKPOINT_INTERVAL + 1, MAX_ITER - 12)
    killed = tmp_path / "killed"
    live = LiveRun("detection_train.py", train_args(data_root, killed), tmp_path,
                   tmp_path / "killed.stderr")
    try:
        live.wait_for(r"checkpoint: ")
        while int(live.wait_for(r"iter (\d+)/").group(1)) < kill_at:
            pass
        children = descendants(live.proc.pid)
        os.kill(live.proc.pid, signal.SIGKILL)
        code, stdout, _ = live.finish()
    finally:
        live.kill()
    assert code == -signal.SIGKILL
    last_logged = max(int(m) for m in re.findall(r"iter (\d+)/", stdout))
    assert last_logged < MAX_ITER, "the run ended before it was killed"
    assert_all_gone(children)  # the orphaned loader worker and forkserver exit by themselves
    # Nothing half-written: every checkpoint folder present loads.
    before = assert_every_checkpoint_loads(killed)

    proc = run_cli("detection_train.py", train_args(data_root, killed) + ["--resume"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    resumed_from = int(re.search(r"resuming from \S+ \(iteration (\d+)\)", proc.stdout)[1])
    assert f"iter_{resumed_from:07d}" == before[-1], (kill_at, before)
    assert losses_by_iteration(killed) == losses_by_iteration(straight), (kill_at, resumed_from)
    after = final_params(killed)
    for name, value in final_params(straight).items():
        np.testing.assert_array_equal(after[name], value, err_msg=name)
    assert_every_checkpoint_loads(killed)
    # Leftover temporary folders of the killed write are gone.
    assert not [n for n in os.listdir(ckpt.checkpoint_root(experiment_dir(killed)))
                if n.startswith(".")]


@pytest.fixture(scope="module")
def trained_to_12(data_root, tmp_path_factory):
    """An experiment trained 12 iterations: checkpoints 4, 8 and 12."""
    output_root = tmp_path_factory.mktemp("trained")
    proc = run_cli("detection_train.py", train_args(data_root, output_root) + ["--max-iter", "12"],
                   cwd=output_root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return output_root


@pytest.mark.parametrize("damaged", [ckpt.PARAMS_FILE, ckpt.OPTIMIZER_FILE, ckpt.STATE_FILE])
def test_resume_skips_a_truncated_checkpoint_and_says_so(data_root, trained_to_12, tmp_path,
                                                         damaged):
    output_root = tmp_path / "out"
    shutil.copytree(trained_to_12, output_root)
    latest = os.path.join(ckpt.checkpoint_root(experiment_dir(output_root)), "iter_0000012")
    path = os.path.join(latest, damaged)
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)

    proc = run_cli("detection_train.py",
                   train_args(data_root, output_root) + ["--resume", "--max-iter", "16"],
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    with open(os.path.join(experiment_dir(output_root), "train.log")) as f:
        log = f.read()
    skipped = re.search(r"checkpoint \S*iter_0000012 is unreadable \((.*)\); resuming from the "
                        r"last complete one, \S*iter_0000008", log)
    assert skipped, log[-3000:]
    assert damaged in skipped[1]
    assert re.search(r"resuming from \S+iter_0000008 \(iteration 8\)", log)
    # Iterations 9..16 ran again; checkpoint 12 was written anew.
    assert "iter 9/16" in proc.stdout and "iter 16/16" in proc.stdout
    assert assert_every_checkpoint_loads(output_root) == [
        "iter_0000004", "iter_0000008", "iter_0000012", "iter_0000016"]


def test_test_cli_names_a_truncated_checkpoint(data_root, trained_to_12, tmp_path):
    output_root = tmp_path / "out"
    shutil.copytree(trained_to_12, output_root)
    path = os.path.join(ckpt.checkpoint_root(experiment_dir(output_root)), "iter_0000012",
                        ckpt.PARAMS_FILE)
    with open(path, "r+b") as f:
        f.truncate(1000)
    proc = run_cli("detection_test.py", train_args(data_root, output_root), cwd=tmp_path)
    assert_one_line_error(proc, "iter_0000012", ckpt.PARAMS_FILE)
