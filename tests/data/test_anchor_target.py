"""RPN anchor targets against a plain-loop reference (per anchor, per gt)."""
import functools

import numpy as np
import pytest

from simpledet.core.anchors import grid_anchors
from simpledet.core.boxes import box_iou, decode_boxes, encode_boxes
from simpledet.data import anchor_target as AT

SCALES, RATIOS = (2.0,), (0.5, 1.0, 2.0)
FPN_STRIDES = (4, 8, 16, 32, 64)


def pair_iou(a, b):
    """IoU of two boxes with the same float32 arithmetic as simpledet.core.boxes.box_iou."""
    f = np.float32
    iw = min(f(a[2]), f(b[2])) - max(f(a[0]), f(b[0])) + f(1)
    ih = min(f(a[3]), f(b[3])) - max(f(a[1]), f(b[1])) + f(1)
    inter = max(iw, f(0)) * max(ih, f(0))
    area_a = (f(a[2]) - f(a[0]) + f(1)) * (f(a[3]) - f(a[1]) + f(1))
    area_b = (f(b[2]) - f(b[0]) + f(1)) * (f(b[3]) - f(b[1]) + f(1))
    union = area_a + area_b - inter
    return f(inter / max(union, f(1e-12)))


def reference_labels(levels, gt, im_info, pos_thresh=0.7, neg_thresh=0.3, allowed_border=0):
    """Plain loops: anchors in (level, a, y, x) order; returns labels and matched gt."""
    anchors = []
    for stride, height, width in levels:
        grid = grid_anchors(stride, SCALES, RATIOS, height, width)  # rows (y, x, a)
        num = len(SCALES) * len(RATIOS)
        for a in range(num):
            for y in range(height):
                for x in range(width):
                    anchors.append(grid[(y * width + x) * num + a])
    labels, matched = [], []
    ious = []
    for anchor in anchors:
        inside = allowed_border < 0 or (
            anchor[0] >= -allowed_border and anchor[1] >= -allowed_border
            and anchor[2] < im_info[1] + allowed_border and anchor[3] < im_info[0] + allowed_border)
        ious.append([pair_iou(anchor, g) for g in gt] if inside else None)
    gt_best = [max([row[j] for row in ious if row is not None], default=0.0)
               for j in range(len(gt))]
    for row in ious:
        if row is None:
            labels.append(-1)
            matched.append(-1)
            continue
        if not gt:
            labels.append(0)
            matched.append(-1)
            continue
        best_j = max(range(len(gt)), key=lambda j: (row[j], -j))  # first max, as argmax
        label = -1
        if row[best_j] < neg_thresh:
            label = 0
        if any(row[j] == gt_best[j] and gt_best[j] > 0 for j in range(len(gt))):
            label = 1
        if row[best_j] >= pos_thresh:
            label = 1
        labels.append(label)
        matched.append(best_j)
    return np.array(anchors, np.float32), np.array(labels), np.array(matched)


def random_gt(rng, count, height, width):
    xy = rng.integers(0, [width - 8, height - 8], size=(count, 2))
    wh = rng.integers(6, 48, size=(count, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [width - 1, height - 1])], axis=1)
    return boxes.astype(np.float32)


CASES = {
    "fpn_levels": dict(levels=AT.feature_levels(64, 96, FPN_STRIDES), im_info=(60, 90, 1.0),
                       num_gt=4, allowed_border=0),
    "single_level": dict(levels=[(16, 6, 8)], im_info=(90, 120, 1.0), num_gt=3,
                         allowed_border=0),
    "border_disabled": dict(levels=[(8, 8, 12)], im_info=(60, 90, 1.0), num_gt=3,
                            allowed_border=-1),
    "border_wide": dict(levels=[(8, 8, 12)], im_info=(60, 90, 1.0), num_gt=3,
                        allowed_border=8),
    "zero_gt": dict(levels=AT.feature_levels(64, 96, FPN_STRIDES), im_info=(64, 96, 1.0),
                    num_gt=0, allowed_border=0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_labels_match_plain_loop_reference(name):
    case = CASES[name]
    rng = np.random.default_rng(7)
    gt = random_gt(rng, case["num_gt"], *case["im_info"][:2]) if case["num_gt"] else \
        np.zeros((0, 4), np.float32)
    ref_anchors, ref_labels, ref_matched = reference_labels(
        case["levels"], [list(g) for g in gt], case["im_info"],
        allowed_border=case["allowed_border"])
    anchors = AT.level_anchors(case["levels"], SCALES, RATIOS)
    np.testing.assert_array_equal(anchors, ref_anchors)
    labels, matched = AT.label_anchors(gt, case["im_info"], case["levels"], SCALES, RATIOS,
                                       allowed_border=case["allowed_border"])
    np.testing.assert_array_equal(labels, ref_labels)
    if case["num_gt"]:
        np.testing.assert_array_equal(matched[labels >= 0], ref_matched[labels >= 0])
        assert (labels == 1).sum() >= case["num_gt"] and (labels == 0).any()
    else:
        assert set(np.unique(labels)) <= {0, -1} and (labels == 0).any()


def dense_labels(anchors, gt, im_info, pos_thresh=0.7, neg_thresh=0.3, allowed_border=0):
    """Second reference: the whole IoU matrix through core.boxes.box_iou (py-faster-rcnn)."""
    labels = np.full(len(anchors), -1)
    matched = np.full(len(anchors), -1)
    inside = np.flatnonzero(AT.inside_image(anchors, im_info, allowed_border))
    iou = box_iou(anchors[inside], gt)
    argmax = iou.argmax(axis=1)
    max_iou = iou.max(axis=1)
    gt_max = iou.max(axis=0)
    inside_labels = np.full(len(inside), -1)
    inside_labels[max_iou < neg_thresh] = 0
    inside_labels[((iou == gt_max) & (gt_max > 0)).any(axis=1)] = 1
    inside_labels[max_iou >= pos_thresh] = 1
    labels[inside], matched[inside] = inside_labels, argmax
    return labels, matched


@pytest.mark.parametrize("scales, ratios", [((8,), (0.5, 1, 2)), ((2 ** 0, 2 ** (1 / 3)),
                                                                    (0.5, 1.7))])
def test_full_size_fpn_matches_dense_iou(scales, ratios):
    # A COCO-sized bucket with many gts, some duplicated, so ties and crowded anchors occur;
    # non-integer scales give anchors that are not on half pixels.
    rng = np.random.default_rng(5)
    levels = AT.feature_levels(800, 1344, FPN_STRIDES)
    im_info = (800, 1067, 1.67)
    xy = rng.uniform(0, 1000, (30, 2))
    gt = np.concatenate([xy, xy + rng.uniform(4, 500, (30, 2))], axis=1).astype(np.float32)
    gt = np.concatenate([gt, gt[:3], [[0, 0, 1066, 799], [-20, -20, 50, 50]]]).astype(np.float32)
    for allowed_border in (0, -1):
        labels, matched = AT.label_anchors(gt, im_info, levels, scales, ratios,
                                           allowed_border=allowed_border)
        anchors = AT.level_anchors(levels, scales, ratios)
        ref_labels, ref_matched = dense_labels(anchors, gt, im_info,
                                               allowed_border=allowed_border)
        np.testing.assert_array_equal(labels, ref_labels)
        np.testing.assert_array_equal(matched, ref_matched)
        assert (labels == 1).sum() > 30


def test_ties_all_become_positive():
    # A gt equal to one anchor shifted by half a stride ties between neighbours.
    levels = [(16, 4, 4)]
    anchors = AT.level_anchors(levels, (1.0,), (1.0,))  # 16x16 boxes at (x*16, y*16)
    gt = np.array([[8, 0, 23, 15]], np.float32)  # half-way between anchors x=0 and x=1 of y=0
    labels, _ = AT.label_anchors(gt, (64, 64, 1.0), levels, (1.0,), (1.0,), pos_thresh=0.9)
    positives = {tuple(anchors[i]) for i in np.flatnonzero(labels == 1)}
    assert positives == {(0, 0, 15, 15), (16, 0, 31, 15)}


def test_gt_that_overlaps_no_anchor_makes_no_positive():
    gt = np.array([[100, 100, 110, 110]], np.float32)
    labels, _ = AT.label_anchors(gt, (200, 200, 1.0), [(16, 2, 2)], (1.0,), (1.0,))
    assert (labels == 1).sum() == 0 and (labels == 0).all()


def test_allowed_border_uses_im_info_not_padding():
    levels = [(16, 4, 6)]  # a 64 x 96 bucket
    anchors = AT.level_anchors(levels, (1.0,), (1.0,))
    gt = np.zeros((0, 4), np.float32)
    labels, _ = AT.label_anchors(gt, (32, 48, 1.0), levels, (1.0,), (1.0,), allowed_border=0)
    inside = (anchors[:, 2] < 48) & (anchors[:, 3] < 32)
    np.testing.assert_array_equal(labels == 0, inside)
    assert (labels[~inside] == -1).all()


def test_subsampling_counts_and_subsets():
    levels = AT.feature_levels(128, 160, FPN_STRIDES)
    rng = np.random.default_rng(3)
    gt = random_gt(rng, 12, 128, 160)
    labels, _ = AT.label_anchors(gt, (128, 160, 1.0), levels, SCALES, RATIOS)
    for batch_size, fg_fraction in [(256, 0.5), (32, 0.25), (8, 0.5)]:
        sampled = AT.subsample_labels(labels, batch_size, fg_fraction, rng)
        num_fg = min((labels == 1).sum(), int(batch_size * fg_fraction))
        assert (sampled == 1).sum() == num_fg
        assert (sampled == 0).sum() == min((labels == 0).sum(), batch_size - num_fg)
        # Sampling only turns labels into -1.
        assert ((sampled == labels) | (sampled == -1)).all()
    assert (labels == 1).sum() > 4  # the (8, 0.5) case really dropped positives


def test_assign_targets_layout_and_decoding():
    levels = AT.feature_levels(64, 96, FPN_STRIDES)
    num_anchors = len(SCALES) * len(RATIOS)
    gt = np.array([[10, 12, 40, 35, 3], [50, 5, 80, 60, 1]], np.float32)
    im_info = (64, 96, 1.0)
    out = AT.assign_anchor_targets(gt, im_info, levels, SCALES, RATIOS, batch_size=64,
                                   rng=np.random.default_rng(0))
    total = sum(num_anchors * h * w for _, h, w in levels)
    assert out["labels"].shape == (total,) and out["targets"].shape == (4 * total,)
    assert out["weights"].shape == (4 * total,)
    assert all(v.dtype == np.float32 for v in out.values())
    labels, matched = AT.label_anchors(gt, im_info, levels, SCALES, RATIOS)
    # Per level, (A, H, W) labels and (4A, H, W) targets with channel a * 4 + k.
    label_maps = AT.split_levels(out["labels"], levels, num_anchors)
    target_maps = AT.split_levels(out["targets"], levels, num_anchors, 4)
    weight_maps = AT.split_levels(out["weights"], levels, num_anchors, 4)
    seen = 0
    for (stride, height, width), lab, tgt, wgt in zip(levels, label_maps, target_maps,
                                                      weight_maps):
        assert lab.shape == (num_anchors, height, width)
        assert tgt.shape == wgt.shape == (4 * num_anchors, height, width)
        grid = grid_anchors(stride, SCALES, RATIOS, height, width)
        for a, y, x in zip(*np.nonzero(lab == 1)):
            anchor = grid[(y * width + x) * num_anchors + a]
            delta = tgt[a * 4:a * 4 + 4, y, x]
            flat = seen + (a * height + y) * width + x
            decoded = decode_boxes(anchor[None], delta[None])[0]
            np.testing.assert_allclose(decoded, gt[matched[flat], :4], atol=1e-3)
            assert (wgt[a * 4:a * 4 + 4, y, x] == 1).all()
        assert (wgt[:, ][np.repeat(lab != 1, 4, axis=0)] == 0).all()
        seen += num_anchors * height * width
    # The scattered layout equals transposing dense (N, 4) arrays level by level.
    anchors = AT.level_anchors(levels, SCALES, RATIOS)
    dense = np.zeros((len(anchors), 4), np.float32)
    positive = out["labels"] == 1
    dense[positive] = encode_boxes(anchors[positive], gt[matched[positive], :4])
    np.testing.assert_array_equal(AT.to_channel_layout(dense, levels, num_anchors),
                                  out["targets"])
    assert ((out["labels"] == 1) <= (labels == 1)).all()
    assert ((out["labels"] == 0) <= (labels == 0)).all()
    assert (out["labels"] == 1).sum() > 0 and (out["labels"] >= 0).sum() == 64


def test_zero_gt_all_sampled_negative():
    levels = [(16, 4, 6)]
    out = AT.assign_anchor_targets(np.zeros((0, 5), np.float32), (64, 96, 1.0), levels,
                                   SCALES, RATIOS, batch_size=16, rng=np.random.default_rng(0))
    assert (out["labels"] == 1).sum() == 0 and (out["labels"] == 0).sum() == 16
    assert not out["targets"].any() and not out["weights"].any()


def test_feature_levels_and_partial_pickles():
    import pickle

    fn = functools.partial(AT.feature_levels, strides=FPN_STRIDES)
    assert pickle.loads(pickle.dumps(fn))(800, 1344) == [
        (4, 200, 336), (8, 100, 168), (16, 50, 84), (32, 25, 42), (64, 13, 21)]


def test_min_pos_iou_gates_the_best_anchor_rule():
    # A 4x4 gt inside 16x16 anchors: IoU 16 / 256 = 0.0625 at best, tied over the anchors
    # that contain it; only the best-anchor rule makes them positive.
    levels = [(4, 8, 8)]
    gt = np.array([[14, 14, 17, 17]], np.float32)
    kwargs = dict(levels=levels, scales=(4.0,), ratios=(1.0,), allowed_border=-1)
    labels, _ = AT.label_anchors(gt, (32, 32, 1.0), **kwargs)
    assert (labels == 1).sum() > 1  # the ties
    labels, _ = AT.label_anchors(gt, (32, 32, 1.0), min_pos_iou=0.0625, **kwargs)
    assert (labels == 1).sum() > 1  # >= is enough
    labels, _ = AT.label_anchors(gt, (32, 32, 1.0), min_pos_iou=0.07, **kwargs)
    assert (labels == 1).sum() == 0 and (labels == 0).all()


def test_loader_passes_min_pos_iou_from_the_config():
    from simpledet.config import load_config
    from simpledet.detectors import FasterRcnn
    from simpledet.engine.build import build_train_loader

    cfg = load_config("config/shapes/faster_c4.py", ["rpn.min_pos_iou=0.3"])
    record = {"image_id": 1, "file_name": "x.jpg", "height": 256, "width": 320,
              "boxes": np.zeros((1, 4), np.float32), "classes": np.ones(1, np.int32)}
    loader = build_train_loader(cfg, [record], FasterRcnn(cfg), num_workers=0)
    assigner = loader._pipeline.assigners[0]  # then the crowd regions (roi_sampler.crowd_iof)
    assert assigner.min_pos_iou == 0.3
