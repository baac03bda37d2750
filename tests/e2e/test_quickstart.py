"""Quickstart regressions (slow, excluded from the default run: ``pytest -m slow``).

Each quickstart config trains from scratch through the real CLIs exactly as the README tells a
user to (only the output folder moved to a temporary one), then detection_test.py evaluates its
last checkpoint; the COCO bbox AP must reach the config's goal. This is what guards the
README's numbers: a change that slows learning down (a schedule, an init, a loss weight, a
sampler) passes every quick test and shows here.

config/shapes/faster_fpn.py: 2400 iterations, 13 min on 2 idle cores (README: AP 0.556), so
about 15 min with the test. A family's quickstart joins QUICKSTARTS with its goal when it lands.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# (config, minimum COCO bbox AP@[.5:.95]) of each family's quickstart
QUICKSTARTS = [("config/shapes/faster_fpn.py", 0.5)]
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
@pytest.mark.parametrize("config, min_ap", QUICKSTARTS, ids=[c for c, _ in QUICKSTARTS])
def test_quickstart_reaches_its_ap(config, min_ap, tmp_path):
    overrides = ["--set", f"output_root={tmp_path}"]
    run("detection_train.py", config, *overrides, timeout=TRAIN_TIMEOUT)
    ap_file = tmp_path / "ap.json"
    run("detection_test.py", config, *overrides, "--json", str(ap_file), timeout=15 * 60)
    bbox = json.loads(ap_file.read_text())["bbox"]
    assert bbox["AP"] >= min_ap, f"{config}: bbox AP {bbox['AP']:.3f} < {min_ap} ({bbox})"
