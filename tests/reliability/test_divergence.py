"""A run that diverges (NaN loss after a learning rate far too high) stops, keeps its last good
checkpoint, and trains on when resumed from it with a lower learning rate."""
import math
import os
import re

import numpy as np
from reliability_cli import experiment_dir, run_cli, train_args, write_dataset

from simpledet.engine import checkpoint as ckpt
from simpledet.utils.plot import read_metrics


def test_nan_loss_stops_and_a_lower_lr_resumes(tmp_path):
    write_dataset(str(tmp_path / "data"))
    args = train_args(tmp_path / "data", tmp_path / "out", "train.checkpoint_interval=8")
    proc = run_cli("detection_train.py", args + ["--max-iter", "8"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    good = ckpt.load_checkpoint(ckpt.find_checkpoint(experiment_dir(tmp_path / "out")))
    saved = {k: v.asnumpy() for k, v in good.arg_params.items()}

    # lr x 100000: the weights overflow within a couple of steps.
    proc = run_cli("detection_train.py",
                   args + ["--resume", "--set", "train.lr_per_16_images=8000"], cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    error = re.search(r"error: training diverged at iteration (\d+): .*(nan|inf).*Lower the "
                      r"learning rate", proc.stderr)
    assert error, proc.stderr[-3000:]
    assert 8 <= int(error[1]) < 16  # stopped before the next checkpoint
    # The last good checkpoint is the only one, untouched.
    assert [it for it, _ in ckpt.list_checkpoints(experiment_dir(tmp_path / "out"))] == [8]
    intact = ckpt.load_checkpoint(ckpt.find_checkpoint(experiment_dir(tmp_path / "out")))
    for name, value in saved.items():
        np.testing.assert_array_equal(intact.arg_params[name].asnumpy(), value, err_msg=name)

    proc = run_cli("detection_train.py",
                   args + ["--resume", "--max-iter", "20", "--set",
                           "train.lr_per_16_images=0.04"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resuming from" in proc.stdout and "iteration 8)" in proc.stdout
    records = read_metrics(os.path.join(experiment_dir(tmp_path / "out"), "metrics.jsonl"))
    resumed = [r for r in records if r["iteration"] > 8]
    assert [r["iteration"] for r in resumed] == list(range(9, 21))
    assert all(math.isfinite(r["loss"]) and r["lr"] == 0.04 / 16 for r in resumed)
    assert [it for it, _ in ckpt.list_checkpoints(experiment_dir(tmp_path / "out"))] == [8, 16, 20]
