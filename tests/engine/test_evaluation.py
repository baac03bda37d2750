"""COCO evaluation: results conversion, COCOeval summary, the eval_coco.py CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from simpledet.data.coco import CocoDataset, DatasetError
from simpledet.engine.evaluation import (
    SUMMARY_KEYS,
    detections_to_coco_results,
    evaluate_coco,
    evaluate_detections,
    load_coco_gt,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEIGHT, WIDTH = 200, 240


def polygon_of_box(x, y, w, h):
    # a diamond inside the box, so segm differs from bbox
    return [[x + w / 2, y, x + w, y + h / 2, x + w / 2, y + h, x, y + h / 2]]


def gt_content():
    """3 images, non-contiguous category ids 2 and 5, objects of all three COCO area ranges."""
    boxes = {1: [(5, 6, 20, 14, 2), (40, 30, 60, 50, 5)],
             2: [(10, 10, 200, 180, 2)],
             3: [(70, 20, 25, 40, 5), (100, 80, 12, 18, 2)]}
    annotations = []
    for image_id, objs in boxes.items():
        for x, y, w, h, cat in objs:
            poly = polygon_of_box(x, y, w, h)
            rle = mask_utils.merge(mask_utils.frPyObjects(poly, HEIGHT, WIDTH))
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": cat, "bbox": [x, y, w, h], "iscrowd": 0,
                                "area": float(mask_utils.area(rle)), "segmentation": poly})
    return {"images": [{"id": i, "file_name": f"{i}.jpg", "height": HEIGHT, "width": WIDTH}
                       for i in boxes],
            "categories": [{"id": 2, "name": "two"}, {"id": 5, "name": "five"}],
            "annotations": annotations}


@pytest.fixture
def gt_file(tmp_path):
    path = tmp_path / "annotations" / "instances_val.json"
    path.parent.mkdir()
    path.write_text(json.dumps(gt_content()))
    return str(path)


@pytest.fixture
def dataset(gt_file, tmp_path):
    return CocoDataset(gt_file, tmp_path / "images", for_training=False)


def gt_as_detections(dataset, shift=0.0, with_masks=False):
    """The ground truth as detector output (original-image boxes, contiguous labels)."""
    detections = []
    for rec in dataset.records:
        boxes = rec["boxes"].copy()
        widths = boxes[:, 2] - boxes[:, 0] + 1
        boxes[:, [0, 2]] += shift * widths[:, None]
        det = {"image_id": rec["image_id"], "boxes": boxes,
               "scores": np.linspace(0.9, 0.5, len(boxes)), "classes": rec["classes"]}
        if with_masks:
            det["masks"] = np.stack([mask_utils.decode(mask_utils.merge(
                mask_utils.frPyObjects(seg, rec["height"], rec["width"])))
                for seg in rec["segmentations"]])
        detections.append(det)
    return detections


def test_results_use_xywh_plus_one_and_original_category_ids(dataset):
    results = detections_to_coco_results(gt_as_detections(dataset), dataset.label_to_cat_id)
    first = [r for r in results if r["image_id"] == 1]
    assert [r["bbox"] for r in first] == [[5, 6, 20, 14], [40, 30, 60, 50]]
    assert [r["category_id"] for r in first] == [2, 5]
    assert first[0]["score"] == pytest.approx(0.9)
    json.dumps(results)  # plain Python types only


def test_masks_become_json_ready_rle(dataset):
    results = detections_to_coco_results(gt_as_detections(dataset, with_masks=True),
                                         dataset.label_to_cat_id)
    rle = results[0]["segmentation"]
    assert isinstance(rle["counts"], str) and rle["size"] == [HEIGHT, WIDTH]
    json.dumps(results)


def test_ground_truth_as_predictions_gives_ap_1(dataset, gt_file, capsys):
    summary = evaluate_detections(gt_file, gt_as_detections(dataset, with_masks=True),
                                  dataset.label_to_cat_id, iou_types=("bbox", "segm"))
    for iou_type in ("bbox", "segm"):
        assert list(summary[iou_type]) == list(SUMMARY_KEYS)
        for key in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
            assert summary[iou_type][key] == pytest.approx(1.0), (iou_type, key)
    printed = capsys.readouterr().out
    assert "COCO bbox evaluation" in printed and "COCO segm evaluation" in printed
    assert printed.count("Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all") == 2


def test_shifted_boxes_lower_ap(dataset, gt_file):
    exact = detections_to_coco_results(gt_as_detections(dataset), dataset.label_to_cat_id)
    shifted = detections_to_coco_results(gt_as_detections(dataset, shift=0.2),
                                         dataset.label_to_cat_id)
    ap_exact = evaluate_coco(gt_file, exact, verbose=False)
    ap_shifted = evaluate_coco(gt_file, shifted, verbose=False)
    # IoU of a box shifted by 20% of its width is 0.8/1.2 = 0.67: counted at 0.5, not at 0.75
    assert ap_shifted["AP50"] == pytest.approx(1.0)
    assert ap_shifted["AP75"] == pytest.approx(0.0)
    assert 0.0 < ap_shifted["AP"] < ap_exact["AP"] == pytest.approx(1.0)


def test_empty_detections_give_zero(gt_file):
    for iou_type in ("bbox", "segm"):
        summary = evaluate_coco(gt_file, [], iou_type, verbose=False)
        assert summary["AP"] == 0.0 and summary["AP50"] == 0.0 and summary["AR100"] == 0.0


def test_results_for_unknown_image_rejected(gt_file):
    results = [{"image_id": 99, "category_id": 2, "bbox": [1, 1, 5, 5], "score": 0.5}]
    with pytest.raises(DatasetError, match=r"image ids \[99\].*not in the ground truth"):
        evaluate_coco(gt_file, results, verbose=False)


def test_segm_needs_segmentations(dataset, gt_file):
    results = detections_to_coco_results(gt_as_detections(dataset), dataset.label_to_cat_id)
    with pytest.raises(DatasetError, match="segm evaluation needs 'segmentation'"):
        evaluate_coco(gt_file, results, "segm", verbose=False)


def test_subset_of_images(dataset, gt_file):
    only_first = [d for d in gt_as_detections(dataset) if d["image_id"] == 1]
    results = detections_to_coco_results(only_first, dataset.label_to_cat_id)
    assert evaluate_coco(gt_file, results, image_ids=[1], verbose=False)["AP"] == pytest.approx(1)
    assert evaluate_coco(gt_file, results, verbose=False)["AP"] < 0.9


def test_ground_truth_loaded_once_can_be_reused(gt_file):
    coco = load_coco_gt(gt_file)
    assert load_coco_gt(coco) is coco and len(coco.getImgIds()) == 3


# ----------------------------------------------------------------------------- CLI

def run_cli(*args):
    cmd = [sys.executable, os.path.join(REPO, "scripts", "eval_coco.py"), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def test_cli_happy_path(dataset, gt_file, tmp_path):
    results = detections_to_coco_results(gt_as_detections(dataset, shift=0.2),
                                         dataset.label_to_cat_id)
    dt_file = tmp_path / "results.json"
    dt_file.write_text(json.dumps(results))
    out = tmp_path / "out" / "metrics.json"
    done = run_cli("--gt", gt_file, "--dt", dt_file, "--iou-type", "bbox", "--json", out)
    assert done.returncode == 0, done.stderr
    assert "Average Precision" in done.stdout
    metrics = json.loads(out.read_text())
    assert list(metrics) == ["bbox"]
    assert list(metrics["bbox"]) == ["AP", "AP50", "AP75", "APs", "APm", "APl"]
    assert metrics["bbox"]["AP50"] == pytest.approx(1.0)
    assert metrics["bbox"]["AP75"] == pytest.approx(0.0)


def test_cli_missing_and_malformed_files(gt_file, tmp_path):
    missing = tmp_path / "nope.json"
    done = run_cli("--gt", missing, "--dt", gt_file)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert str(missing) in done.stderr and "not found" in done.stderr

    broken = tmp_path / "broken.json"
    broken.write_text('[{"image_id": 1, ')
    done = run_cli("--gt", gt_file, "--dt", broken)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert str(broken) in done.stderr and "malformed" in done.stderr
