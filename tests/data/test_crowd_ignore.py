"""Crowd regions as ignore regions of the RPN anchor targets (rule 5 of
simpledet.data.anchor_target): hand cases, empty inputs, the assigner, the loader's resize and
flip of the crowd boxes, and the photos fixture's crowd region end to end."""
import functools

import numpy as np
import pytest

from simpledet.data import anchor_target as AT
from simpledet.data import loader as loader_module
from simpledet.data import transforms
from simpledet.data.loader import DetectionLoader
from simpledet.data.targets import ImageSample, RpnAnchorAssigner

# One level, stride 16, one 32x32 anchor per location on a 4x8 grid of a 64x128 image:
# the anchor at (y, x) is [16x - 8, 16y - 8, 16x + 23, 16y + 23] (centre 16x + 7.5).
LEVELS = [(16, 4, 8)]
KW = dict(levels=LEVELS, scales=(2.0,), ratios=(1.0,), allowed_border=-1)
IM_INFO = (64, 128, 1.0)


def anchor(y, x):
    return y * 8 + x


def test_hand_case_inside_crowd_is_ignored_outside_stays_negative():
    anchors = AT.level_anchors(LEVELS, (2.0,), (1.0,))
    np.testing.assert_array_equal(anchors[anchor(1, 5)], [72, 8, 103, 39])
    gt = np.array([[0, 0, 31, 31]], np.float32)  # best anchors: (0, 0), (0, 1), (1, 0), (1, 1)
    crowd = np.array([[64, 0, 127, 63]], np.float32)  # the right half of the image
    plain, _ = AT.label_anchors(gt, IM_INFO, **KW)
    labels, _ = AT.label_anchors(gt, IM_INFO, crowd_boxes=crowd, **KW)
    assert plain[anchor(0, 0)] == 1 and plain[anchor(1, 5)] == 0 and plain[anchor(3, 1)] == 0
    assert labels[anchor(1, 5)] == -1  # inside the crowd box: IoF 1
    assert labels[anchor(3, 1)] == 0  # far from it
    assert labels[anchor(2, 4)] == -1  # [56, 24, 87, 55]: 24 of its 32 columns, IoF 0.75
    iof = AT.in_crowd(anchors, crowd, 0.5)
    # Exactly half is not more than half: the anchor at x = 4 starts at 56, so its
    # intersection with [72, ...] is 16 of 32 columns.
    half = np.array([[72, 0, 127, 63]], np.float32)
    assert not AT.in_crowd(anchors[[anchor(1, 4)]], half, 0.5)[0]
    labels_half, _ = AT.label_anchors(gt, IM_INFO, crowd_boxes=half, **KW)
    assert labels_half[anchor(1, 4)] == 0 and labels_half[anchor(1, 5)] == -1
    # Only negatives change: everything else is as without crowd boxes.
    changed = labels != plain
    assert (plain[changed] == 0).all() and (labels[changed] == -1).all()
    np.testing.assert_array_equal(changed, (plain == 0) & iof)


def test_positive_anchors_inside_a_crowd_region_stay_positive():
    gt = np.array([[72, 8, 103, 39]], np.float32)  # exactly the anchor at (1, 5)
    crowd = np.array([[64, 0, 127, 63]], np.float32)
    labels, matched = AT.label_anchors(gt, IM_INFO, crowd_boxes=crowd, **KW)
    assert labels[anchor(1, 5)] == 1 and matched[anchor(1, 5)] == 0


def test_in_crowd_matches_a_loop_reference():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (300, 2))
    anchors = np.concatenate([xy, xy + rng.uniform(1, 40, (300, 2))], axis=1).astype(np.float32)
    crowd = np.array([[10, 10, 50, 40], [60, 0, 99, 99]], np.float32)
    want = []
    for a in anchors:
        area = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
        best = 0.0
        for c in crowd:
            iw = max(min(a[2], c[2]) - max(a[0], c[0]) + 1, 0)
            ih = max(min(a[3], c[3]) - max(a[1], c[1]) + 1, 0)
            best = max(best, iw * ih / area)
        want.append(best > 0.5)
    np.testing.assert_array_equal(AT.in_crowd(anchors, crowd), want)
    assert 0 < sum(want) < len(want)
    assert not AT.in_crowd(anchors, np.zeros((0, 4), np.float32)).any()
    assert AT.in_crowd(np.zeros((0, 4), np.float32), crowd).shape == (0,)


@pytest.mark.parametrize("crowd", [None, np.zeros((0, 4), np.float32), []])
def test_no_crowd_box_changes_nothing(crowd):
    gt = np.array([[3, 5, 40, 30], [60, 10, 120, 60]], np.float32)
    levels = AT.feature_levels(64, 128, (8, 16))
    args = (gt, IM_INFO, levels, (2.0,), (0.5, 1.0, 2.0))
    plain = AT.assign_anchor_targets(*args, batch_size=32, rng=np.random.default_rng(1))
    out = AT.assign_anchor_targets(*args, batch_size=32, crowd_boxes=crowd,
                                   rng=np.random.default_rng(1))
    for key in plain:
        np.testing.assert_array_equal(out[key], plain[key])


def test_zero_gt_with_a_crowd_box():
    crowd = np.array([[64, 0, 127, 63]], np.float32)
    labels, matched = AT.label_anchors(np.zeros((0, 5), np.float32), IM_INFO,
                                       crowd_boxes=crowd, **KW)
    anchors = AT.level_anchors(LEVELS, (2.0,), (1.0,))
    inside = AT.in_crowd(anchors, crowd)
    assert inside.any() and (~inside).any()
    np.testing.assert_array_equal(labels, np.where(inside, -1, 0))
    assert (matched == -1).all()
    out = AT.assign_anchor_targets(np.zeros((0, 4)), IM_INFO, LEVELS, (2.0,), (1.0,),
                                   allowed_border=-1, batch_size=8, crowd_boxes=crowd,
                                   rng=np.random.default_rng(0))
    assert (out["labels"][inside] == -1).all() and (out["labels"] == 0).sum() == 8
    assert not out["weights"].any() and not out["targets"].any()


def test_zero_gt_and_zero_crowd():
    labels, _ = AT.label_anchors(np.zeros((0, 4)), IM_INFO, crowd_boxes=np.zeros((0, 4)), **KW)
    assert (labels == 0).all()


def rpn_assigner(**kw):
    return RpnAnchorAssigner(functools.partial(AT.feature_levels, strides=(16,)), (2.0,), (1.0,),
                             allowed_border=-1, batch_size=10_000, **kw)


def test_the_assigner_passes_the_crowd_boxes_and_can_turn_the_rule_off():
    crowd = np.array([[64, 0, 127, 63]], np.float32)
    sample = ImageSample(boxes=np.array([[0, 0, 31, 31]], np.float32),
                         classes=np.ones(1, np.int32), crowd_boxes=crowd,
                         im_info=np.float32(IM_INFO), bucket=(64, 128))
    outputs = {}
    for name, assigner in (("on", rpn_assigner()), ("off", rpn_assigner(crowd_iof=None))):
        out = {k: np.full(shape, 7, dtype) for k, (shape, dtype)
               in assigner.outputs(64, 128).items()}
        assigner.assign(sample, np.random.default_rng(0), out)
        outputs[name] = out
    inside = AT.in_crowd(AT.level_anchors(LEVELS, (2.0,), (1.0,)), crowd)
    assert (outputs["on"]["rpn_label"][inside] == -1).all()
    assert (outputs["off"]["rpn_label"][inside] == 0).all()
    for key in ("rpn_target", "rpn_weight"):
        np.testing.assert_array_equal(outputs["on"][key], outputs["off"][key])


@pytest.mark.parametrize("flip", [False, True], ids=["unflipped", "flipped"])
def test_the_loader_resizes_and_flips_crowd_boxes_with_the_image(tmp_path, monkeypatch, flip):
    import cv2

    path = str(tmp_path / "img.png")
    cv2.imwrite(path, np.zeros((32, 64, 3), np.uint8))
    record = {"image_id": 1, "file_name": path, "height": 32, "width": 64,
              "boxes": np.array([[2, 2, 15, 15]], np.float32), "classes": np.ones(1, np.int32),
              "crowd_boxes": np.array([[40, 0, 63, 31]], np.float32),  # the right part
              "segmentations": [[[2, 2, 15, 2, 15, 15]]]}
    monkeypatch.setattr(loader_module, "random_flip",
                        functools.partial(transforms.random_flip, prob=1.0 if flip else 0.0))
    loader = DetectionLoader([record], batch_size=1, short_sides=(64,), long_side=128,
                             mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), flip=True, max_gt=4,
                             assigners=[rpn_assigner()], num_workers=0, shuffle=False)
    compact = loader._pipeline.records[0]
    np.testing.assert_array_equal(compact["crowd_boxes"], record["crowd_boxes"])
    assert compact["segmentations"] == record["segmentations"]
    (batch,) = list(loader)
    crowd = np.array([[80, 0, 127, 63]], np.float32)  # x2 scale: [80, 127]
    if flip:
        crowd = np.array([[0, 0, 47, 63]], np.float32)
    inside = AT.in_crowd(AT.level_anchors(LEVELS, (2.0,), (1.0,)), crowd)
    labels = batch["rpn_label"][0]
    assert inside.any() and (~inside).any() and (labels[inside] == -1).all()
    # Outside it the labels are those without crowd boxes (the sample keeps every anchor).
    plain, _ = AT.label_anchors(batch["gt_boxes"][0, :1, :4], batch["im_info"][0], **KW)
    np.testing.assert_array_equal(labels[~inside], plain[~inside])


def test_records_keep_crowd_boxes_and_segmentations_and_check_them(tmp_path):
    base = {"image_id": 1, "file_name": "x.png", "height": 8, "width": 8,
            "boxes": np.zeros((2, 4), np.float32), "classes": np.ones(2, np.int32)}
    kwargs = dict(batch_size=1, short_sides=(8,), long_side=8, mean=(0, 0, 0), std=(1, 1, 1),
                  num_workers=0)
    compact = DetectionLoader([base], **kwargs)._pipeline.records[0]
    assert compact["crowd_boxes"].shape == (0, 4) and compact["segmentations"] == []
    with pytest.raises(ValueError, match="2 boxes but 1 segmentations"):
        DetectionLoader([dict(base, segmentations=[[[0, 0, 1, 1, 1, 0]]])], **kwargs)
    with pytest.raises(ValueError, match="record 0"):
        DetectionLoader([dict(base, crowd_boxes=[[1, 2, 3]])], **kwargs)


# --- the photos fixture: coins.png has one crowd region (three coins) --------------------------

@pytest.fixture(scope="module")
def photos_coins(tmp_path_factory):
    from simpledet.config import load_config
    from simpledet.data.coco import CocoDataset
    from simpledet.data.photos import ensure_photos_dataset
    from simpledet.detectors import FasterRcnn

    paths = ensure_photos_dataset(tmp_path_factory.mktemp("photos") / "ds")
    records = CocoDataset(*paths.train, for_training=True).records
    (coins,) = [r for r in records if len(r["crowd_boxes"])]
    assert r"coins" in coins["file_name"] and len(coins["crowd_boxes"]) == 1
    cfg = load_config("config/photos/faster_fpn.py")
    return cfg, FasterRcnn(cfg), coins


@pytest.mark.parametrize("flip", [False, True], ids=["unflipped", "flipped"])
def test_photos_crowd_region_is_ignored_in_the_loader_batch(photos_coins, monkeypatch, flip):
    from simpledet.engine.build import build_train_loader

    cfg, detector, coins = photos_coins
    monkeypatch.setattr(loader_module, "random_flip",
                        functools.partial(transforms.random_flip, prob=1.0 if flip else 0.0))
    with build_train_loader(cfg, [coins], detector, num_workers=0) as loader:
        batch = next(iter(loader))
    (assigner,) = loader._pipeline.assigners
    im_info = batch["im_info"][0]
    crowd = transforms.scale_boxes(coins["crowd_boxes"], im_info)
    gt = transforms.scale_boxes(coins["boxes"], im_info)
    if flip:
        crowd = transforms.flip_boxes(crowd, im_info[1])
        gt = transforms.flip_boxes(gt, im_info[1])
    np.testing.assert_array_equal(batch["gt_boxes"][0, :len(gt), :4], gt)
    levels = assigner.levels(*batch["data"].shape[2:])
    anchors = AT.level_anchors(levels, assigner.scales, assigner.ratios)
    inside = AT.in_crowd(anchors, crowd)
    labels = batch["rpn_label"][0]
    assert inside.sum() > 50
    assert not (labels[inside] == 0).any()  # no negative inside the crowd region
    assert (labels[~inside] == 0).sum() > 0
    # Without the rule those anchors would be negatives (the coins of the region have no
    # boxes of their own): the rule is what ignores them.
    kw = dict(pos_thresh=assigner.pos_thresh, neg_thresh=assigner.neg_thresh,
              allowed_border=assigner.allowed_border, min_pos_iou=assigner.min_pos_iou)
    plain, _ = AT.label_anchors(gt, im_info, levels, assigner.scales, assigner.ratios, **kw)
    ruled, _ = AT.label_anchors(gt, im_info, levels, assigner.scales, assigner.ratios,
                                crowd_boxes=crowd, **kw)
    assert (plain[inside] == 0).sum() > 50
    np.testing.assert_array_equal(ruled, np.where(inside & (plain == 0), -1, plain))
