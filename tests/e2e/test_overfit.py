"""The overfit tests: the real CLIs train config/photos/faster_fpn.py (and mask_fpn.py) from
scratch on 8 real photographs (non-unit resize scales, portrait and landscape, category ids with
gaps, 21 coins in one image) and must find the boxes (and masks) again on those same images.

It guards the whole pipeline in one run: a dead network, a broken target, a wrong coordinate
map or id mapping all end far below the bar. About 2-3 minutes on 2 cores.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "photos" / "faster_fpn.py"
MIN_AP50 = 0.5


MASK_CONFIG = REPO / "config" / "photos" / "mask_fpn.py"


def run(script, *args, config=CONFIG):
    completed = subprocess.run([sys.executable, str(REPO / script), "--config", str(config),
                                *args], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert completed.returncode == 0, (script, completed.stdout[-3000:],
                                       completed.stderr[-3000:])
    return completed


def test_from_scratch_fpn_overfits_the_photos(tmp_path):
    overrides = ["--set", f"output_root={tmp_path}"]
    run("detection_train.py", *overrides)
    ap_file = tmp_path / "ap.json"
    run("detection_test.py", *overrides, "--json", str(ap_file))
    bbox = json.loads(ap_file.read_text())["bbox"]
    assert bbox["AP50"] >= MIN_AP50, bbox
    # the results json is in the original images' frame with the json's own category ids
    experiment = tmp_path / "faster_fpn"
    results = json.loads(next(experiment.glob("results_*_bbox.json")).read_text())
    annotations = json.loads(Path(_annotation_file(experiment)).read_text())
    sizes = {im["id"]: (im["width"], im["height"]) for im in annotations["images"]}
    category_ids = {c["id"] for c in annotations["categories"]}
    assert results and {r["category_id"] for r in results} <= category_ids
    for r in results:
        x, y, w, h = r["bbox"]
        width, height = sizes[r["image_id"]]
        assert 0 <= x and 0 <= y and x + w <= width + 1e-3 and y + h <= height + 1e-3


# slow: the default run keeps the Faster overfit (the shared pipeline); Mask R-CNN's adds 2-5 min
@pytest.mark.slow
def test_from_scratch_mask_rcnn_overfits_the_photos_masks(tmp_path):
    overrides = ["--set", f"output_root={tmp_path}"]
    run("detection_train.py", *overrides, config=MASK_CONFIG)
    ap_file = tmp_path / "ap.json"
    run("detection_test.py", *overrides, "--json", str(ap_file), "--vis", "1",
        config=MASK_CONFIG)
    summaries = json.loads(ap_file.read_text())
    assert summaries["bbox"]["AP50"] >= MIN_AP50, summaries
    assert summaries["segm"]["AP50"] >= MIN_AP50, summaries
    experiment = tmp_path / "mask_fpn"
    results = json.loads(next(experiment.glob("results_*_bbox.json")).read_text())
    annotations = json.loads(Path(_annotation_file(experiment)).read_text())
    sizes = {im["id"]: [im["height"], im["width"]] for im in annotations["images"]}
    # every mask is an RLE of its original image's size (portrait and landscape)
    assert results and all(r["segmentation"]["size"] == sizes[r["image_id"]] for r in results)
    assert list((experiment / "vis").rglob("*.png"))


def _annotation_file(experiment):
    """The val annotation file the run used (from its saved config)."""
    sys.path.insert(0, str(REPO))
    from simpledet.config import load_config

    cfg = load_config(os.path.join(experiment, "config.json"))
    return cfg.dataset.val_annotations
