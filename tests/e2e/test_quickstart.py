"""Quickstart regressions (slow, excluded from the default run: ``pytest -m slow``).

Each quickstart config trains from scratch through the real CLIs exactly as the README tells a
user to (only the output folder moved to a temporary one), then detection_test.py evaluates its
last checkpoint; the COCO bbox AP (the RPN-only quickstart: the proposal AR) must reach the
config's goal. This is what guards the
README's numbers: a change that slows learning down (a schedule, an init, a loss weight, a
sampler) passes every quick test and shows here.

config/shapes/faster_fpn.py: 2400 iterations, 9-11 min on 2 idle cores (README: AP 0.552), so
about 15 min with the test. A family's quickstart joins QUICKSTARTS with its goal when it lands.
config/shapes/cascade_fpn.py: the same model and schedule with three cascade stages (README: AP
0.694, AP75 0.791); its goal is the issue's, AP75 at least 0.03 above Faster's 0.645.
config/shapes/rpn_fpn.py: 3200 iterations, about 11 min (README: AR@100 0.604, measured with one
thread beside another run: rounding differs with two); its goal is set below that measurement.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# (config, evaluation, {its summary key: minimum}) of each family's quickstart
QUICKSTARTS = [("config/shapes/faster_fpn.py", "bbox", {"AP": 0.5}),
               ("config/shapes/cascade_fpn.py", "bbox", {"AP": 0.6, "AP75": 0.675}),
               ("config/shapes/rpn_fpn.py", "proposal", {"AR100": 0.55})]
TRAIN_TIMEOUT = 60 * 60  # seconds: 4x the measured time, for a busy machine


def run(script, config, *args, timeout):
    completed = subprocess.run([sys.executable, str(REPO / script), "--config",
                                str(REPO / config), *args], cwd=REPO, capture_output=True,
                               text=True, timeout=timeout, env=dict(os.environ))
    assert completed.returncode == 0, (script, completed.stdout[-3000:],
                                       completed.stderr[-3000:])
    return completed


@pytest.mark.slow
@pytest.mark.timeout(TRAIN_TIMEOUT + 15 * 60)
@pytest.mark.parametrize("config, eval_type, goals", QUICKSTARTS,
                         ids=[c for c, *_ in QUICKSTARTS])
def test_quickstart_reaches_its_goal(config, eval_type, goals, tmp_path):
    overrides = ["--set", f"output_root={tmp_path}"]
    run("detection_train.py", config, *overrides, timeout=TRAIN_TIMEOUT)
    metrics_file = tmp_path / "metrics.json"
    run("detection_test.py", config, *overrides, "--json", str(metrics_file), timeout=15 * 60)
    metrics = json.loads(metrics_file.read_text())[eval_type]
    for key, minimum in goals.items():
        assert metrics[key] >= minimum, (f"{config}: {eval_type} {key} {metrics[key]:.3f} < "
                                         f"{minimum} ({metrics})")
