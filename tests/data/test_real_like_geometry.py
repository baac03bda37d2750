"""Real-like data through records, the loader and the RPN anchor targets.

The shapes dataset is scale 1, landscape only, with contiguous ids 1..6 and few boxes; these
fixtures break each of those symmetries (COCO-like photographs 640 px on the long side,
portrait and landscape, resized to short 320 / long 480 with scales != 1 both ways, the 80
non-contiguous COCO category ids, 45 boxes in one image, boxes covering almost the whole
image) and check every step against NumPy arithmetic written out here.

The image pixels are coordinate ramps (red = x, green = y of the original image), so a
transposed, flipped or wrongly scaled image shows up against its boxes.
"""
import functools
import json
import os

import cv2
import numpy as np
import pytest

from simpledet.config import FasterRcnnConfig
from simpledet.core.anchors import grid_anchors
from simpledet.core.boxes import box_iou, decode_boxes
from simpledet.data import anchor_target as AT
from simpledet.data.coco import CocoDataset
from simpledet.data.loader import DetectionLoader
from simpledet.detectors import FasterRcnn
from simpledet.engine.build import bucket_shapes

SHORT, LONG = 320, 480
# COCO 2017's 80 category ids (1..90 with gaps).
COCO_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]
# (height, width) of the original images: landscape, portrait, square, odd sizes, an upscale.
SIZES = {11: (427, 640), 12: (640, 480), 13: (640, 427), 14: (612, 612), 15: (375, 500),
         16: (500, 333), 17: (200, 300), 18: (480, 640)}
MANY_BOXES_IMAGE = 12  # a portrait image with 45 boxes


def ramp_image(height, width):
    """RGB uint8: red = x ramp, green = y ramp over the original image, blue = 128."""
    xs = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    ys = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    return np.stack([xs, ys, np.full_like(xs, 128)], axis=-1).round().astype(np.uint8)


def real_like_coco(seed=0):
    """COCO json content for SIZES: random boxes (some crossing the border, one nearly the
    whole image per image), categories drawn from all 80 ids (1 and 90 always used)."""
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id, (height, width) in SIZES.items():
        images.append({"id": image_id, "file_name": f"{image_id:012d}.png", "height": height,
                       "width": width})
        count = 45 if image_id == MANY_BOXES_IMAGE else int(rng.integers(3, 9))
        boxes = [[0.6, 1.3, width - 2.0, height - 3.1]]  # nearly the whole image
        for _ in range(count - 1):
            w = float(rng.uniform(4, width * 0.6))
            h = float(rng.uniform(4, height * 0.6))
            x = float(rng.uniform(-10, width - w * 0.5))
            y = float(rng.uniform(-10, height - h * 0.5))
            boxes.append([round(x, 2), round(y, 2), round(w, 2), round(h, 2)])
        cats = rng.choice(COCO_IDS, len(boxes)).tolist()
        cats[0], cats[-1] = 90, 1
        for bbox, cat in zip(boxes, cats):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": int(cat), "bbox": bbox, "iscrowd": 0,
                                "area": bbox[2] * bbox[3]})
    categories = [{"id": i, "name": f"cat{i}"} for i in COCO_IDS]
    return {"images": images, "annotations": annotations, "categories": categories}


def write_real_like_coco(root, seed=0):
    """Writes the json and the ramp images; returns (ann_file, image_dir, json content)."""
    content = real_like_coco(seed)
    image_dir = os.path.join(root, "images", "train")
    os.makedirs(image_dir)
    os.makedirs(os.path.join(root, "annotations"))
    for img in content["images"]:
        pixels = ramp_image(img["height"], img["width"])
        cv2.imwrite(os.path.join(image_dir, img["file_name"]), pixels[:, :, ::-1])
    ann_file = os.path.join(root, "annotations", "instances_train.json")
    with open(ann_file, "w") as f:
        json.dump(content, f)
    return ann_file, image_dir, content


def expected_boxes(content, image_id):
    """NumPy: the json's [x, y, w, h] as clipped "+1" [x1, y1, x2, y2] plus category ids, in
    json order."""
    height, width = SIZES[image_id]
    rows, cats = [], []
    for ann in content["annotations"]:
        if ann["image_id"] != image_id:
            continue
        x, y, w, h = ann["bbox"]
        rows.append([max(x, 0), max(y, 0), min(x + w - 1, width - 1), min(y + h - 1, height - 1)])
        cats.append(ann["category_id"])
    return np.array(rows, np.float32), np.array(cats)


def expected_input_boxes(content, image_id):
    """NumPy: expected_boxes in the resized image, clipped to it. A "+1" box covers the pixel
    span [x1, x2 + 1), which the resize takes to [x1 * s, (x2 + 1) * s)."""
    height, width = SIZES[image_id]
    scale = numpy_scale(height, width)
    new_h, new_w = round(height * scale), round(width * scale)
    boxes, cats = expected_boxes(content, image_id)
    boxes = np.concatenate([boxes[:, :2] * scale, (boxes[:, 2:] + 1) * scale - 1], axis=1)
    boxes = boxes.astype(np.float32)
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, new_w - 1)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, new_h - 1)
    return boxes, cats


def numpy_scale(height, width):
    return min(SHORT / min(height, width), LONG / max(height, width))


def tiny_fpn_config():
    cfg = FasterRcnnConfig()
    cfg.pretrain = None
    cfg.backbone.normalizer = "bn"
    cfg.backbone.depth = 18
    cfg.neck.channels = 16
    cfg.rpn.conv_channels = 16
    cfg.dataset.class_names = tuple(f"cat{i}" for i in COCO_IDS)
    cfg.input.short, cfg.input.long = SHORT, LONG
    cfg.freeze()
    return cfg


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    return write_real_like_coco(str(tmp_path_factory.mktemp("real_like")))


@pytest.fixture(scope="module")
def dataset(coco):
    return CocoDataset(coco[0], coco[1])


@pytest.fixture(scope="module")
def detector():
    return FasterRcnn(tiny_fpn_config())


def make_loader(dataset, detector, **changes):
    cfg = detector.cfg
    kwargs = dict(batch_size=2, short_sides=(SHORT,), long_side=LONG, mean=(0.0, 0.0, 0.0),
                  std=(1.0, 1.0, 1.0), flip=False,
                  assigners=detector.target_assigners(bucket_shapes(cfg)),
                  max_gt=cfg.input.max_num_gt, num_workers=0, shuffle=False)
    kwargs.update(changes)
    return DetectionLoader(dataset.records, **kwargs)


# --- records ---------------------------------------------------------------------------------

def test_records_map_coco_ids_to_contiguous_labels(coco, dataset):
    _, _, content = coco
    assert dataset.num_classes == 80
    assert dataset.cat_id_to_label == {cid: i + 1 for i, cid in enumerate(COCO_IDS)}
    assert dataset.label_to_cat_id == {i + 1: cid for i, cid in enumerate(COCO_IDS)}
    assert dataset.cat_id_to_label[90] == 80 and dataset.cat_id_to_label[1] == 1
    for rec in dataset.records:
        boxes, cats = expected_boxes(content, rec["image_id"])
        np.testing.assert_allclose(rec["boxes"], boxes, rtol=0, atol=1e-4)
        assert rec["classes"].tolist() == [COCO_IDS.index(c) + 1 for c in cats]
        assert [dataset.label_to_cat_id[int(label)] for label in rec["classes"]] == cats.tolist()
    assert len(next(r for r in dataset.records if r["image_id"] == MANY_BOXES_IMAGE)["boxes"]) \
        == 45


# --- the loader ------------------------------------------------------------------------------

def test_graph_levels_match_the_loader_levels_for_both_buckets(detector):
    landscape, portrait = bucket_shapes(detector.cfg)
    assert landscape == (320, 480) and portrait == (480, 320)
    strides = detector.cfg.rpn_feature_strides
    for bucket in (landscape, portrait):
        levels = detector.rpn_levels(*bucket)
        assert levels == AT.feature_levels(*bucket, strides)
        assert [(h, w) for _, h, w in levels] == [
            (-(-bucket[0] // s), -(-bucket[1] // s)) for s in strides]
    # Portrait maps are the landscape ones transposed.
    assert [(s, w, h) for s, h, w in detector.rpn_levels(*landscape)] == \
        detector.rpn_levels(*portrait)


def test_loader_geometry_matches_numpy(coco, dataset, detector):
    _, _, content = coco
    loader = make_loader(dataset, detector)
    seen = set()
    for batch in loader:
        for slot, image_id in enumerate(batch["image_ids"].tolist()):
            seen.add(image_id)
            height, width = SIZES[image_id]
            scale = numpy_scale(height, width)
            assert scale != 1
            new_h, new_w = round(height * scale), round(width * scale)
            np.testing.assert_allclose(batch["im_info"][slot], [new_h, new_w, scale], rtol=1e-6)
            bucket = batch["data"].shape[2:]
            assert bucket == ((480, 320) if height > width else (320, 480))
            # gt: original "+1" boxes times the scale, clipped to the resized image
            want, cats = expected_input_boxes(content, image_id)
            gt = batch["gt_boxes"][slot]
            count = len(want)
            np.testing.assert_allclose(gt[:count, :4], want, rtol=1e-5, atol=1e-3)
            assert gt[:count, 4].tolist() == [COCO_IDS.index(c) + 1 for c in cats]
            assert (gt[count:] == -1).all()
            # pixels: zero padding right and below, ramps in the original frame inside
            image = batch["data"][slot]
            assert not image[:, new_h:, :].any() and not image[:, :, new_w:].any()
            for x, y in [(0, 0), (new_w - 1, new_h - 1), (new_w // 3, new_h - 1),
                         (new_w - 1, new_h // 4)] + [tuple(b[:2]) for b in want] \
                    + [tuple(b[2:]) for b in want]:
                x, y = int(round(x)), int(round(y))
                orig_x = min(max((x + 0.5) / scale - 0.5, 0), width - 1)
                orig_y = min(max((y + 0.5) / scale - 0.5, 0), height - 1)
                assert abs(image[0, y, x] - orig_x * 255 / (width - 1)) < 2.5, (image_id, x, y)
                assert abs(image[1, y, x] - orig_y * 255 / (height - 1)) < 2.5, (image_id, x, y)
    assert seen == set(SIZES)


def test_more_boxes_than_max_gt_are_truncated_in_order(dataset, detector, coco):
    loader = make_loader(dataset, detector, max_gt=40)
    loads = 0
    for batch in loader:
        for slot, image_id in enumerate(batch["image_ids"].tolist()):
            if image_id == MANY_BOXES_IMAGE:
                loads += 1
                want, _ = expected_input_boxes(coco[2], image_id)
                np.testing.assert_allclose(batch["gt_boxes"][slot, :, :4], want[:40],
                                           rtol=1e-5, atol=1e-3)
    assert loads >= 1 and loader.truncated_gt == 5 * loads  # counted per loaded image


def unflatten_positives(flat_labels, flat_targets, levels, num_anchors):
    """(anchors, deltas) of the positive anchors, read with the layout the graph gives the
    RPN outputs: per level labels (A, H, W), targets (4A, H, W) with channel a * 4 + k, and
    the anchors of (a, y, x) from grid_anchors, whose rows are (y, x, a)."""
    anchors, deltas = [], []
    labels = AT.split_levels(flat_labels, levels, num_anchors)
    targets = AT.split_levels(flat_targets, levels, num_anchors, 4)
    for (stride, height, width), lab, tgt in zip(levels, labels, targets):
        grid = grid_anchors(stride, (8.0,), (0.5, 1.0, 2.0), height, width)
        for a, y, x in zip(*np.nonzero(lab == 1)):
            anchors.append(grid[(y * width + x) * num_anchors + a])
            deltas.append(tgt[a * 4:a * 4 + 4, y, x])
    return np.array(anchors, np.float32).reshape(-1, 4), np.array(deltas).reshape(-1, 4)


def test_anchor_targets_decode_to_gt_in_both_orientations(dataset, detector):
    cfg = detector.cfg
    assert cfg.rpn.anchor_scales == (8.0,) and cfg.rpn.anchor_ratios == (0.5, 1.0, 2.0)
    num_anchors = cfg.rpn.num_anchors
    for batch in make_loader(dataset, detector):
        levels = detector.rpn_levels(*batch["data"].shape[2:])
        assert batch["rpn_label"].shape[1] == AT.num_level_anchors(levels, (8.0,),
                                                                   (0.5, 1.0, 2.0))
        for slot in range(len(batch["image_ids"])):
            height, width = batch["im_info"][slot, :2]
            gt = batch["gt_boxes"][slot]
            gt = gt[gt[:, 4] > 0, :4]
            labels = batch["rpn_label"][slot]
            assert 0 < (labels == 1).sum() <= 128 and (labels >= 0).sum() == 256
            anchors, deltas = unflatten_positives(labels, batch["rpn_target"][slot], levels,
                                                  num_anchors)
            # allowed_border = 0: positives lie inside the resized image (not the padding)
            assert (anchors[:, :2] >= 0).all()
            assert (anchors[:, 2] < width).all() and (anchors[:, 3] < height).all()
            decoded = decode_boxes(anchors, deltas)
            iou = box_iou(anchors, gt)
            matched = gt[iou.argmax(axis=1)]
            np.testing.assert_allclose(decoded, matched, rtol=0, atol=2e-3)
            weights = AT.split_levels(batch["rpn_weight"][slot], levels, num_anchors, 4)
            assert sum(int(w.sum()) for w in weights) == 4 * len(anchors)


def test_every_gt_gets_its_best_anchors_as_positives_before_sampling(dataset, detector):
    """Including the 45 boxes of one image and the boxes covering almost the whole image.
    (A gt's best anchor regresses towards the gt it overlaps most, as in py-faster-rcnn.)"""
    cfg = detector.cfg
    scales, ratios = cfg.rpn.anchor_scales, cfg.rpn.anchor_ratios
    for batch in make_loader(dataset, detector):
        levels = detector.rpn_levels(*batch["data"].shape[2:])
        anchors = AT.level_anchors(levels, scales, ratios)
        for slot in range(len(batch["image_ids"])):
            gt = batch["gt_boxes"][slot]
            gt = gt[gt[:, 4] > 0, :4]
            labels, _ = AT.label_anchors(gt, batch["im_info"][slot], levels, scales, ratios)
            inside = AT.inside_image(anchors, batch["im_info"][slot], cfg.rpn.allowed_border)
            iou = box_iou(anchors[inside], gt)
            best = iou == iou.max(axis=0)
            assert (iou.max(axis=0) > 0).all()
            assert (labels[inside][best.any(axis=1)] == 1).all()


@pytest.mark.parametrize("im_info", [(320, 480, 0.75), (480, 320, 0.75), (427, 320, 0.667)])
def test_object_covering_the_whole_image_gets_positive_anchors(detector, im_info):
    """With allowed_border = 0 the large anchors (P6: 512 px, P5: 256 px squares and
    360 x 184 / 184 x 368) mostly cross the image; the box must still get its best inside
    anchors as positives, with targets that decode to it."""
    cfg = detector.cfg
    height, width = im_info[:2]
    bucket = (320, 480) if width >= height else (480, 320)
    levels = detector.rpn_levels(*bucket)
    gt = np.array([[0, 0, width - 1, height - 1]], np.float32)
    out = AT.assign_anchor_targets(gt, im_info, levels, cfg.rpn.anchor_scales,
                                   cfg.rpn.anchor_ratios, rng=np.random.default_rng(0))
    anchors, deltas = unflatten_positives(out["labels"], out["targets"], levels,
                                          cfg.rpn.num_anchors)
    assert len(anchors) >= 1
    iou = box_iou(anchors, gt)[:, 0]
    all_anchors = AT.level_anchors(levels, cfg.rpn.anchor_scales, cfg.rpn.anchor_ratios)
    inside = AT.inside_image(all_anchors, im_info, 0)
    best = box_iou(all_anchors[inside], gt).max()
    assert best > 0.35 and np.allclose(iou, best)
    np.testing.assert_allclose(decode_boxes(anchors, deltas), np.repeat(gt, len(anchors), 0),
                               rtol=0, atol=2e-3)
    # Small anchors have IoU < 0.3 with the box: negatives fill the sampled batch.
    assert (out["labels"] >= 0).sum() == cfg.rpn.batch_per_image


def test_assigners_pickle_for_workers(detector):
    import pickle

    assigner, crowd = detector.target_assigners(bucket_shapes(detector.cfg))
    assert isinstance(assigner.levels_fn, functools.partial)
    assert pickle.loads(pickle.dumps(crowd)).outputs(480, 320) == crowd.outputs(480, 320)
    copy = pickle.loads(pickle.dumps(assigner))
    assert copy.levels(480, 320) == detector.rpn_levels(480, 320)
    assert copy.outputs(480, 320) == assigner.outputs(480, 320)
    with pytest.raises(KeyError, match="no RPN feature sizes for bucket 64x64"):
        copy.levels(64, 64)
