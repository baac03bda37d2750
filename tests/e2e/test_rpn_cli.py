"""End to end through the real CLIs for the RPN-only family: detection_train.py trains
config/shapes/rpn_fpn.py a few iterations at 64x80, detection_test.py evaluates the checkpoint
by proposal AR (printed, --json), writes the proposals' COCO results json and, with
--dump-proposals, every val image's proposals in original pixels.

The data are tests/e2e/test_train_test_cli.py's (json image ids not 1..N, category ids with a
gap, portrait and landscape, scales 1, 0.5, 0.67, 2). The coordinate map is checked exactly as
there: val image 25 is image 11 with every pixel doubled, so the network sees the same input and
image 25's proposals must be image 11's with every coordinate doubled ("+1" boxes: x2' =
2 (x2 + 1) - 1) and the same scores; the dumped file must hold what the results json holds.
About 10 s on 2 cores.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from test_train_test_cli import CATEGORIES, DOUBLED, TRAIN_IMAGES, VAL_IMAGES, write_split

from simpledet.engine.evaluation import PROPOSAL_KEYS
from simpledet.engine.proposals import load_proposals

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "shapes" / "rpn_fpn.py"
ITERATIONS = 4
POST_NMS = 200


def run(script, overrides, *args):
    completed = subprocess.run(
        [sys.executable, str(REPO / script), "--config", str(CONFIG), *args, "--set",
         *overrides], cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert completed.returncode == 0, (script, completed.stdout[-3000:],
                                       completed.stderr[-3000:])
    return completed


def test_rpn_train_then_test_cli_reports_ar_and_dumps_proposals(tmp_path):
    data = tmp_path / "data"
    write_split(data, "train", TRAIN_IMAGES, seed=0)
    val = write_split(data, "val", VAL_IMAGES, seed=1, doubled=DOUBLED)
    overrides = ["dataset.synthetic=none", f"dataset.root={data}", "dataset.train_split=train",
                 "dataset.val_split=val", f"dataset.class_names={tuple(CATEGORIES.values())!r}",
                 "input.short=64", "input.long=80", "input.loader_workers=0",
                 "train.images_per_device=1", "test.images_per_device=1",
                 "train.iters_at_batch16=1", "train.lr_steps_at_batch16=()",
                 "train.warmup_iters=1", "train.log_interval=1", "train.tensorboard=False",
                 "rpn.min_box_size=0", f"rpn.test_post_nms={POST_NMS}",
                 f"output_root={tmp_path / 'experiments'}", "name=e2e"]
    trained = run("detection_train.py", overrides, "--max-iter", str(ITERATIONS))
    assert "rpn_cls_loss" in trained.stdout + trained.stderr
    experiment = tmp_path / "experiments" / "e2e"
    assert (experiment / "checkpoints" / f"iter_{ITERATIONS:07d}").is_dir()

    ar_file, dump = tmp_path / "ar.json", tmp_path / "dump" / "proposals.npz"
    tested = run("detection_test.py", overrides, "--json", str(ar_file), "--dump-proposals",
                 str(dump))
    assert "COCO proposal evaluation" in tested.stdout
    assert "Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | maxDets=1000 ]" in (
        tested.stdout)
    proposal = json.loads(ar_file.read_text())["proposal"]
    assert list(proposal) == list(PROPOSAL_KEYS)
    assert all(math.isfinite(v) and -1 <= v <= 1 for v in proposal.values()), proposal
    assert proposal["AR100"] <= proposal["AR300"] <= proposal["AR1000"]

    results = json.loads((experiment / f"results_iter_{ITERATIONS:07d}_proposal.json")
                         .read_text())
    dumped = load_proposals(dump)
    sizes = {im["id"]: (im["width"], im["height"]) for im in val["images"]}
    assert sorted(dumped) == sorted(sizes)
    first_category = min(CATEGORIES)  # label 1: proposals have no class
    for image_id, (width, height) in sizes.items():
        boxes, scores = dumped[image_id]["boxes"], dumped[image_id]["scores"]
        assert 0 < len(boxes) <= POST_NMS and len(scores) == len(boxes)
        assert (np.diff(scores) <= 0).all() and (scores > 0).all() and (scores <= 1).all()
        assert boxes.min() >= 0 and (boxes[:, 2] <= width - 1).all() and (
            boxes[:, 3] <= height - 1).all()
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
        assert len({tuple(b) for b in boxes.tolist()}) == len(boxes)  # no padding repeats
        # the results json holds the same boxes (xywh, rounded to 0.01) and scores
        mine = [r for r in results if r["image_id"] == image_id]
        assert len(mine) == len(boxes)
        assert {r["category_id"] for r in mine} == {first_category}
        xywh = np.array([r["bbox"] for r in mine])
        np.testing.assert_allclose(xywh[:, :2], boxes[:, :2], atol=0.006)
        np.testing.assert_allclose(xywh[:, 2:], boxes[:, 2:] - boxes[:, :2] + 1, atol=0.011)
        np.testing.assert_allclose([r["score"] for r in mine], scores, atol=1e-5)
    # the same network input at scale 0.5 and 1: the same proposals, coordinates doubled
    for big, small in DOUBLED.items():
        a, b = dumped[small], dumped[big]
        assert len(a["boxes"]) == len(b["boxes"])
        np.testing.assert_array_equal(a["scores"], b["scores"])
        doubled = np.concatenate([2 * a["boxes"][:, :2], 2 * (a["boxes"][:, 2:] + 1) - 1], 1)
        np.testing.assert_allclose(b["boxes"], doubled, atol=1e-3)

    # proposals of a Faster R-CNN are no proposals: a one-line error, exit code 2, before
    # any checkpoint is looked for
    faster = [o for o in overrides if not o.startswith(("name=", "rpn.test_post_nms"))]
    refused = subprocess.run(
        [sys.executable, str(REPO / "detection_test.py"), "--config",
         str(REPO / "config" / "shapes" / "faster_fpn.py"), "--dump-proposals",
         str(tmp_path / "x.npz"), "--set", *faster, "name=e2e_faster"], cwd=REPO,
        capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "FasterRcnn's results are detections, not proposals" in refused.stderr
    assert not (tmp_path / "x.npz").exists()
