"""Original image coordinates -> network input -> test graph post-processing -> original
coordinates -> COCO results json, on real-like data: portrait and landscape images resized
by scales != 1 (down and up), the 80 non-contiguous COCO category ids, 45 boxes in one image.

A "perfect network" is simulated: rois near each gt box (in network-input pixels, from the
test loader's gt_boxes) with the class-specific deltas that take them onto the box and
probability 1 for the box's class. What comes out of DetectionPostprocess, the tester's
mapping and the results conversion must be the annotation file's own boxes and category ids,
and COCOeval must give AP 1.
"""
import json
import os

import cv2
import mxnet as mx
import numpy as np
import pytest

from simpledet.core.boxes import encode_boxes
from simpledet.data.coco import CocoDataset
from simpledet.data.loader import DetectionLoader
from simpledet.engine.evaluation import evaluate_detections
from simpledet.engine.tester import predict
from simpledet.ops import detection_postprocess

SHORT, LONG = 320, 480
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
SIZES = {21: (427, 640), 22: (640, 480), 23: (640, 427), 24: (612, 612), 25: (200, 300)}
MAX_GT = 64
STDS = (0.1, 0.1, 0.2, 0.2)


def write_coco(root, seed=0):
    """Images of SIZES with random boxes inside them, as COCO's (45 in image 22; a third of them
    touching the right or bottom edge, one covering the whole image), categories over all 80
    ids. Returns (ann_file, image_dir, content)."""
    rng = np.random.default_rng(seed)
    image_dir = os.path.join(root, "images", "val")
    os.makedirs(image_dir)
    os.makedirs(os.path.join(root, "annotations"))
    images, annotations = [], []
    for image_id, (height, width) in SIZES.items():
        name = f"{image_id:012d}.jpg"
        cv2.imwrite(os.path.join(image_dir, name),
                    rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        count = 45 if image_id == 22 else int(rng.integers(3, 9))
        boxes = [[0.6, 1.3, width - 0.6, height - 1.3]]  # reaches the right and bottom edges
        for k in range(count - 1):
            w = round(float(rng.uniform(6, width * 0.6)), 2)
            h = round(float(rng.uniform(6, height * 0.6)), 2)
            x = round(float(rng.uniform(0, width - w)), 2)
            y = round(float(rng.uniform(0, height - h)), 2)
            if k % 3 == 1:  # objects cut by the image border, as often in COCO
                x, y = (width - w, y) if k % 2 else (x, height - h)
            boxes.append([x, y, w, h])
        cats = rng.choice(COCO_IDS, len(boxes)).tolist()
        cats[0], cats[-1] = 90, 1
        for bbox, cat in zip(boxes, cats):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(cat), "bbox": bbox, "iscrowd": 0,
                                "area": bbox[2] * bbox[3]})
    content = {"images": images, "annotations": annotations,
               "categories": [{"id": i, "name": f"cat{i}"} for i in COCO_IDS]}
    ann_file = os.path.join(root, "annotations", "instances_val.json")
    with open(ann_file, "w") as f:
        json.dump(content, f)
    return ann_file, image_dir, content


def clipped_xywh(bbox, height, width):
    """NumPy: a json bbox clipped to the image, in the json's [x, y, w, h] ("+1" widths)."""
    x, y, w, h = bbox
    x1, y1 = max(x, 0), max(y, 0)
    x2, y2 = min(x + w - 1, width - 1), min(y + h - 1, height - 1)
    return [x1, y1, x2 - x1 + 1, y2 - y1 + 1]


class PerfectNetwork:
    """dets of a test-loader batch through detection_postprocess: rois jittered around each gt
    box, deltas that undo the jitter, probability 1 for the box's class."""

    def __init__(self, num_classes, seed=0):
        self.num_classes = num_classes  # including background
        self.rng = np.random.default_rng(seed)
        self.batch_sizes = []

    def __call__(self, batch):
        gt_boxes, im_info = batch["gt_boxes"], batch["im_info"]
        self.batch_sizes.append(batch["data"].shape[2:])
        size, rows = gt_boxes.shape[:2]
        rois = np.zeros((size * rows, 5), np.float32)
        probs = np.zeros((size * rows, self.num_classes), np.float32)
        deltas = np.zeros((size * rows, 4 * self.num_classes), np.float32)
        probs[:, 0] = 1  # padding rows: background
        for b in range(size):
            for j, (x1, y1, x2, y2, label) in enumerate(gt_boxes[b]):
                r = b * rows + j
                rois[r, 0] = b
                if label < 1:
                    rois[r, 1:] = [0, 0, 8, 8]
                    continue
                w, h = x2 - x1 + 1, y2 - y1 + 1
                jitter = self.rng.uniform(-0.1, 0.1, 4) * [w, h, w, h]
                roi = np.array([x1, y1, x2, y2]) + jitter
                roi[2:] = np.maximum(roi[2:], roi[:2] + 2)
                rois[r, 1:] = roi
                c = int(label)
                probs[r] = 0
                probs[r, c] = 1
                deltas[r, 4 * c:4 * c + 4] = encode_boxes(roi[None], [[x1, y1, x2, y2]],
                                                          stds=STDS)[0]
        dets = detection_postprocess(mx.nd.array(rois), mx.nd.array(probs), mx.nd.array(deltas),
                                     mx.nd.array(im_info), bbox_stds=STDS, nms_threshold=1.0,
                                     max_det=MAX_GT)
        return dets.asnumpy()


@pytest.fixture(scope="module")
def roundtrip(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("roundtrip"))
    ann_file, image_dir, content = write_coco(root)
    dataset = CocoDataset(ann_file, image_dir, for_training=False)
    loader = DetectionLoader(dataset.records, batch_size=2, short_sides=(SHORT,), long_side=LONG,
                             mean=(0, 0, 0), std=(1, 1, 1), flip=False, max_gt=MAX_GT,
                             num_workers=0, shuffle=False, for_training=False)
    network = PerfectNetwork(dataset.num_classes + 1)
    sizes = {r["image_id"]: (r["height"], r["width"]) for r in dataset.records}
    detections = predict(network, loader, sizes)
    results_file = os.path.join(root, "results.json")
    summary = evaluate_detections(ann_file, detections, dataset.label_to_cat_id,
                                  results_file=results_file, verbose=False)
    with open(results_file) as f:
        results = json.load(f)
    return content, network, detections, results, summary


def test_both_orientations_and_padding_slots_were_run(roundtrip):
    _, network, detections, _, _ = roundtrip
    assert set(network.batch_sizes) == {(320, 480), (480, 320)}
    assert sorted(d["image_id"] for d in detections) == sorted(SIZES)  # padding slots dropped


def test_results_json_holds_the_annotation_boxes_and_category_ids(roundtrip):
    content, _, _, results, _ = roundtrip
    for image in content["images"]:
        height, width = image["height"], image["width"]
        want = sorted((a["category_id"], *clipped_xywh(a["bbox"], height, width))
                      for a in content["annotations"] if a["image_id"] == image["id"])
        got = sorted((r["category_id"], *r["bbox"]) for r in results
                     if r["image_id"] == image["id"])
        assert [g[0] for g in got] == [w[0] for w in want]
        np.testing.assert_allclose([g[1:] for g in got], [w[1:] for w in want], rtol=0,
                                   atol=0.02)
    assert {r["category_id"] for r in results} >= {1, 90}


def test_detections_stay_inside_the_original_images(roundtrip):
    _, _, detections, _, _ = roundtrip
    for det in detections:
        height, width = SIZES[det["image_id"]]
        boxes = det["boxes"]
        assert boxes.min() >= 0
        assert boxes[:, [0, 2]].max() <= width - 1 and boxes[:, [1, 3]].max() <= height - 1
        assert boxes[:, [0, 2]].max() > width - 3 and boxes[:, [1, 3]].max() > height - 5


def test_coco_eval_of_the_perfect_network_is_one(roundtrip):
    *_, summary = roundtrip
    bbox = summary["bbox"]
    for key in ("AP", "AP50", "AP75", "APm", "APl", "AR100"):
        assert bbox[key] == pytest.approx(1.0), key
