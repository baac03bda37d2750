"""End to end through the real CLIs: detection_train.py trains the shapes FPN layout (Faster
R-CNN, and RetinaNet) a few iterations at 64x80 (``--set`` overrides), detection_test.py
evaluates that checkpoint on a val split and writes a COCO results json that must be valid for
the annotation file it came from: the json's own image ids (not 1..N) and category ids (3 and
7, not labels 1..K), scores in (0, 1], and xywh boxes in each original image's frame.

The coordinate map is checked exactly: val image 25 is image 11 (64x80, scale 1) with every
pixel doubled (128x160, scale 0.5); the resize gives the network the same input for both, so
image 25's results must be image 11's with every xywh number doubled (same scores, same
classes). A box left in network-input coordinates, scaled back twice or by the wrong axis
fails it. The other val images (a 120x96 portrait, a 32x40 landscape upscaled 2x) must keep
every box inside their original frame. About 10 s per family on 2 cores.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
# config, and what it needs beyond the shared overrides
FAMILIES = {
    # no proposal size filter: its threshold scales with im_info[2], which would treat the
    # doubled image differently
    "faster": (REPO / "config" / "shapes" / "faster_fpn.py", ["rpn.min_box_size=0"]),
    # 4 iterations leave every probability near the 0.01 prior: a threshold below it
    "retina": (REPO / "config" / "shapes" / "retina_fpn.py", ["test.score_thresh=0.001"]),
    # three stacked branches on the batch axis, merged by NMS at test (README's commands)
    "trident": (REPO / "config" / "shapes" / "trident_c4.py", ["rpn.min_box_size=0"]),
}
CATEGORIES = {3: "circle", 7: "square"}  # json ids with a gap, mapped to labels 1, 2
# (image id, height, width): ids not 1..N; landscape and portrait; scales 1, 0.5, 0.67, 2
VAL_IMAGES = [(11, 64, 80), (25, 128, 160), (40, 120, 96), (52, 32, 40)]
DOUBLED = {25: 11}  # image 25 is image 11 with every pixel repeated 2x2
TRAIN_IMAGES = [(1, 64, 80), (2, 48, 60), (3, 96, 120), (4, 80, 64)]
ITERATIONS = 4


def write_split(root, split, images, seed, doubled=None):
    """Noise images with one or two filled boxes each, COCO layout; returns the json content.

    doubled: {image id: id of an earlier image} whose pixels (and boxes) it repeats 2x2.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(root / "images" / split, exist_ok=True)
    os.makedirs(root / "annotations", exist_ok=True)
    entries, annotations, pixels_of = [], [], {}
    for image_id, height, width in images:
        pixels = rng.integers(0, 120, size=(height, width, 3), dtype=np.uint8)
        for k, category_id in enumerate(CATEGORIES):
            if k and image_id % 2:
                break
            x, y = (0.1 + 0.45 * k) * width, 0.2 * height
            w, h = 0.4 * width, 0.5 * height
            pixels[int(y):int(y + h), int(x):int(x + w)] = 200 + 40 * k
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": category_id, "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": 0})
        if doubled and image_id in doubled:
            pixels = np.repeat(np.repeat(pixels_of[doubled[image_id]], 2, 0), 2, 1)
            assert pixels.shape[:2] == (height, width)
        pixels_of[image_id] = pixels
        name = f"{image_id:05d}.png"
        cv2.imwrite(str(root / "images" / split / name), pixels)
        entries.append({"id": image_id, "file_name": name, "height": height, "width": width})
    content = {"images": entries, "annotations": annotations,
               "categories": [{"id": i, "name": n} for i, n in CATEGORIES.items()]}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(content))
    return content


def run(script, config, overrides, *args):
    completed = subprocess.run(
        [sys.executable, str(REPO / script), "--config", str(config), *args, "--set",
         *overrides], cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert completed.returncode == 0, (script, completed.stdout[-3000:],
                                       completed.stderr[-3000:])
    return completed


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_train_then_test_cli_writes_valid_coco_results(tmp_path, family):
    config, family_overrides = FAMILIES[family]
    data = tmp_path / "data"
    write_split(data, "train", TRAIN_IMAGES, seed=0)
    val = write_split(data, "val", VAL_IMAGES, seed=1, doubled=DOUBLED)
    overrides = ["dataset.synthetic=none", f"dataset.root={data}", "dataset.train_split=train",
                 "dataset.val_split=val", f"dataset.class_names={tuple(CATEGORIES.values())!r}",
                 "input.short=64", "input.long=80", "input.loader_workers=0",
                 "train.images_per_device=1", "test.images_per_device=1",
                 "train.iters_at_batch16=1", "train.lr_steps_at_batch16=()",
                 "train.warmup_iters=1", "train.log_interval=1", "train.tensorboard=False",
                 f"output_root={tmp_path / 'experiments'}", "name=e2e", *family_overrides]
    run("detection_train.py", config, overrides, "--max-iter", str(ITERATIONS))
    experiment = tmp_path / "experiments" / "e2e"
    assert (experiment / "checkpoints" / f"iter_{ITERATIONS:07d}").is_dir()

    ap_file = tmp_path / "ap.json"
    tested = run("detection_test.py", config, overrides, "--json", str(ap_file))
    assert "Average Precision" in tested.stdout
    bbox = json.loads(ap_file.read_text())["bbox"]
    assert {"AP", "AP50", "AP75", "APs", "APm", "APl"} <= set(bbox)
    assert all(math.isfinite(v) and -1 <= v <= 1 for v in bbox.values()), bbox

    results = json.loads((experiment / f"results_iter_{ITERATIONS:07d}_bbox.json").read_text())
    assert isinstance(results, list) and results
    sizes = {im["id"]: (im["width"], im["height"]) for im in val["images"]}
    by_image = {image_id: [] for image_id in sizes}
    for r in results:
        assert set(r) == {"image_id", "category_id", "bbox", "score"}, r
        assert r["image_id"] in sizes and r["category_id"] in CATEGORIES, r
        assert 0 < r["score"] <= 1, r
        x, y, w, h = r["bbox"]
        width, height = sizes[r["image_id"]]
        assert all(math.isfinite(v) for v in (x, y, w, h)) and w > 0 and h > 0, r
        assert x >= 0 and y >= 0 and x + w <= width + 1e-3 and y + h <= height + 1e-3, (
            f"box {r['bbox']} outside the original {width}x{height} image {r['image_id']}")
        by_image[r["image_id"]].append(r)
    assert all(by_image.values()), {k: len(v) for k, v in by_image.items()}
    # the same network input at scale 0.5 and 1: the same detections, xywh doubled
    # (the results json rounds to 0.01)
    for big, small in DOUBLED.items():
        assert len(by_image[big]) == len(by_image[small])
        for a, b in zip(by_image[small], by_image[big]):
            assert (a["category_id"], a["score"]) == (b["category_id"], b["score"]), (a, b)
            assert np.allclose(np.multiply(a["bbox"], 2), b["bbox"], rtol=0, atol=0.03), (
                f"image {big} (image {small} at twice the size): box {b['bbox']} is not twice "
                f"{a['bbox']}")
