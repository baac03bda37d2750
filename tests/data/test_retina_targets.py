"""RetinaNet anchor targets (simpledet.data.targets.retina) against a dense NumPy reference (the
(N, G) IoU matrix of every anchor of every level, built independently of the vectorised code):
random multi-level cases with gaps in the class ids, zero gt, crowd regions, portrait buckets,
low-quality matches, ties; the assigner through ImageSample / the loader, pickling; and the
targets decoded by the post-processing op give back the gt boxes (anchors and layouts agree)."""
import functools
import pickle

import mxnet as mx
import numpy as np
import pytest

from simpledet.core.anchors import grid_anchors
from simpledet.core.boxes import box_iou, encode_boxes
from simpledet.data.anchor_target import feature_levels
from simpledet.data.targets import ImageSample, RetinaAnchorAssigner, levels_table
from simpledet.data.targets.retina import assign_retina_targets
from simpledet.ops import retina_postprocess
from simpledet.ops.retina_postprocess import RETINA_SCALES

RATIOS = (0.5, 1.0, 2.0)
STRIDES = (8, 16, 32, 64, 128)
LANDSCAPE, PORTRAIT = (256, 384), (384, 256)


# ---------------------------------------------------------------- dense NumPy reference
def reference(gt, classes, levels, scales=RETINA_SCALES, ratios=RATIOS, pos=0.5, neg=0.4,
              low_quality=True, crowd=None, crowd_iof=0.5):
    """labels (N,), targets and weights (4N,) from the full IoU matrix."""
    num_a = len(scales) * len(ratios)
    anchors = np.concatenate([  # (level, a, y, x) order
        grid_anchors(s, scales, ratios, h, w).reshape(h, w, num_a, 4).transpose(2, 0, 1, 3)
        .reshape(-1, 4) for s, h, w in levels])
    count = len(anchors)
    labels = np.zeros(count, np.float32)
    box_targets = np.zeros((count, 4), np.float32)
    if len(gt):
        iou = box_iou(anchors, gt)
        max_iou, argmax = iou.max(axis=1), iou.argmax(axis=1)
        labels[:] = -1
        labels[max_iou < neg] = 0
        fg = max_iou >= pos
        if low_quality:
            gt_max = iou.max(axis=0)
            fg |= ((iou == gt_max[None]) & (gt_max[None] > 0)).any(axis=1)
        labels[fg] = classes[argmax[fg]]
        box_targets[fg] = encode_boxes(anchors[fg], gt[argmax[fg]])
    if crowd is not None and len(crowd):
        area = (anchors[:, 2] - anchors[:, 0] + 1) * (anchors[:, 3] - anchors[:, 1] + 1)
        iw = np.minimum(anchors[:, None, 2], crowd[None, :, 2]) - np.maximum(
            anchors[:, None, 0], crowd[None, :, 0]) + 1
        ih = np.minimum(anchors[:, None, 3], crowd[None, :, 3]) - np.maximum(
            anchors[:, None, 1], crowd[None, :, 1]) + 1
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        covered = (inter > np.float32(crowd_iof) * area[:, None]).any(axis=1)
        labels[(labels == 0) & covered] = -1
    weights = (labels >= 1).astype(np.float32)[:, None].repeat(4, axis=1)
    parts, start = [], 0
    for _, h, w in levels:  # (N, 4) -> (level, a * 4 + k, y, x)
        n = num_a * h * w
        for arr in (box_targets, weights):
            parts.append(arr[start:start + n].reshape(num_a, h, w, 4).transpose(0, 3, 1, 2)
                         .reshape(-1))
        start += n
    targets = np.concatenate(parts[0::2])
    weight = np.concatenate(parts[1::2])
    return labels, targets, weight


def random_gt(rng, count, height, width, min_side=4):
    w = rng.uniform(min_side, width * 0.8, count)
    h = rng.uniform(min_side, height * 0.8, count)
    x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
    return np.stack([x, y, x + w - 1, y + h - 1], axis=1).astype(np.float32)


def check(gt, classes, levels, im_info, **kw):
    ours = assign_retina_targets(gt, classes, im_info, levels, RETINA_SCALES, RATIOS,
                                 **{k: v for k, v in kw.items() if k != "crowd"},
                                 crowd_boxes=kw.get("crowd"))
    ref = reference(gt, classes, levels, low_quality=kw.get("low_quality_matches", True),
                    crowd=kw.get("crowd"), pos=kw.get("pos_thresh", 0.5),
                    neg=kw.get("neg_thresh", 0.4))
    np.testing.assert_array_equal(ours["labels"], ref[0])
    np.testing.assert_array_equal(ours["weights"], ref[2])
    np.testing.assert_allclose(ours["targets"], ref[1], rtol=0, atol=1e-6)
    return ours


# ---------------------------------------------------------------- vs the reference
@pytest.mark.parametrize("bucket,count,seed", [(LANDSCAPE, 12, 0), (PORTRAIT, 12, 1),
                                               (LANDSCAPE, 40, 2), (PORTRAIT, 1, 3)])
def test_matches_dense_reference(bucket, count, seed):
    rng = np.random.default_rng(seed)
    levels = feature_levels(*bucket, STRIDES)
    height, width = bucket[0] - 17, bucket[1] - 9  # the image inside its padded bucket
    gt = random_gt(rng, count, height, width)
    classes = rng.choice([1, 3, 7, 80], count)  # ids with gaps
    out = check(gt, classes, levels, (height, width, 0.75))
    labels = out["labels"]
    assert set(np.unique(labels)) <= {-1, 0, 1, 3, 7, 80}
    assert (labels >= 1).any() and (labels == 0).any() and (labels == -1).any()


def test_zero_gt_is_all_background():
    levels = feature_levels(*PORTRAIT, STRIDES)
    out = check(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), levels, (384, 256, 1.0))
    assert (out["labels"] == 0).all() and not out["targets"].any() and not out["weights"].any()
    # and with a crowd region: background under it is ignored, nothing else
    crowd = np.array([[0, 0, 127, 191]], np.float32)
    out = check(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), levels, (384, 256, 1.0),
                crowd=crowd)
    assert set(np.unique(out["labels"])) == {-1, 0}


def test_crowd_regions_ignore_background_only():
    rng = np.random.default_rng(5)
    levels = feature_levels(*LANDSCAPE, STRIDES)
    gt = random_gt(rng, 6, 256, 384)
    classes = rng.integers(1, 5, 6)
    crowd = np.array([[200, 10, 380, 200], [0, 150, 90, 250]], np.float32)
    plain = check(gt, classes, levels, (256, 384, 1.0))
    crowded = check(gt, classes, levels, (256, 384, 1.0), crowd=crowd)
    changed = plain["labels"] != crowded["labels"]
    assert changed.any()
    assert (plain["labels"][changed] == 0).all() and (crowded["labels"][changed] == -1).all()
    np.testing.assert_array_equal(plain["targets"], crowded["targets"])


def test_low_quality_matches_keep_every_reachable_gt():
    levels = feature_levels(*LANDSCAPE, STRIDES)
    # 10x10 and 4x60 boxes: no anchor (>= 32 px) reaches IoU 0.5 with them
    gt = np.array([[100, 100, 109, 109], [200, 50, 203, 109]], np.float32)
    classes = np.array([2, 5])
    with_lq = check(gt, classes, levels, (256, 384, 1.0))
    without = check(gt, classes, levels, (256, 384, 1.0), low_quality_matches=False)
    assert not (without["labels"] >= 1).any()
    assert set(np.unique(with_lq["labels"][with_lq["labels"] >= 1])) == {2, 5}


def test_tied_best_anchors_all_become_foreground():
    levels = [(8, 4, 4)]
    scales, ratios = (4.0,), (1.0,)  # one 32x32 anchor per location: [8x - 12, ..., 8x + 19]
    # a 16x24 box straddling the anchors at x = 1 and 2 equally (IoU 0.375 each)
    gt = np.array([[8, -12, 23, 11]], np.float32)
    out = assign_retina_targets(gt, [3], (32, 32, 1.0), levels, scales, ratios)
    iou = box_iou(grid_anchors(8, scales, ratios, 4, 4), gt)[:, 0]
    best = np.flatnonzero(iou == iou.max())
    assert len(best) == 2 and iou.max() < 0.4
    np.testing.assert_array_equal(np.flatnonzero(out["labels"] == 3), best)
    assert (out["labels"][iou < 0.4] != 3).sum() == len(iou) - 2


def test_thresholds_are_inclusive_and_exclusive():
    levels = [(8, 1, 1)]
    anchor = grid_anchors(8, (4.0,), (1.0,), 1, 1)[0]  # [-12, -12, 19, 19], 32x32
    half = np.array([[-12, -12, 19, 3]], np.float32)  # 16 of 32 rows: IoU exactly 0.5
    out = assign_retina_targets(half, [1], (8, 8, 1.0), levels, (4.0,), (1.0,),
                                low_quality_matches=False)
    assert box_iou(anchor, half)[0, 0] == 0.5 and out["labels"][0] == 1
    tall = np.array([[-12, -12, 19, 0]], np.float32)  # 13 rows: IoU 0.40625, ignored
    out = assign_retina_targets(tall, [1], (8, 8, 1.0), levels, (4.0,), (1.0,),
                                low_quality_matches=False)
    assert out["labels"][0] == -1


def test_rejects_bad_inputs():
    levels = [(8, 2, 2)]
    with pytest.raises(ValueError, match="2 gt boxes but 1 gt classes"):
        assign_retina_targets(np.zeros((2, 4), np.float32), [1], (16, 16, 1), levels,
                              (4.0,), (1.0,))
    with pytest.raises(ValueError, match="0 is background"):
        assign_retina_targets(np.array([[0, 0, 5, 5]], np.float32), [0], (16, 16, 1), levels,
                              (4.0,), (1.0,))
    with pytest.raises(ValueError, match="neg_thresh"):
        RetinaAnchorAssigner(lambda h, w: levels, (4.0,), (1.0,), pos_thresh=0.3,
                             neg_thresh=0.4)


# ---------------------------------------------------------------- the assigner
def test_assigner_fills_batch_slices_and_pickles():
    table = levels_table(functools.partial(feature_levels, strides=STRIDES),
                         [LANDSCAPE, PORTRAIT])
    assigner = pickle.loads(pickle.dumps(RetinaAnchorAssigner(table, RETINA_SCALES, RATIOS)))
    rng = np.random.default_rng(7)
    for bucket in (LANDSCAPE, PORTRAIT):
        outputs = assigner.outputs(*bucket)
        assert list(outputs) == list(assigner.names)
        count = assigner.num_anchors(*bucket)
        assert outputs["retina_label"] == ((count,), np.float32)
        assert outputs["retina_target"] == outputs["retina_weight"] == ((4 * count,), np.float32)
        gt = random_gt(rng, 5, bucket[0] - 30, bucket[1] - 30)
        classes = np.array([1, 2, 6, 6, 3], np.int32)
        crowd = np.array([[0, 0, 60, 60]], np.float32)
        sample = ImageSample(boxes=gt, classes=classes, crowd_boxes=crowd,
                             im_info=np.array([bucket[0] - 30, bucket[1] - 30, 0.6], np.float32),
                             bucket=bucket)
        out = {name: np.full(shape, 123.0, dtype) for name, (shape, dtype) in outputs.items()}
        state = rng.bit_generator.state
        assigner.assign(sample, rng, out)
        assert rng.bit_generator.state == state  # no sampling: draws nothing
        ref = reference(gt, classes, feature_levels(*bucket, STRIDES), crowd=crowd)
        np.testing.assert_array_equal(out["retina_label"], ref[0])
        np.testing.assert_allclose(out["retina_target"], ref[1], atol=1e-6)
        np.testing.assert_array_equal(out["retina_weight"], ref[2])


def test_decoding_the_targets_with_the_postprocess_op_gives_the_gt_boxes():
    """Anchors, label and delta layouts of the assigner are the op's: feed it probability 0.99
    at each foreground anchor's class channel, the targets as deltas, and every gt comes
    back (NMS keeps one box per gt)."""
    bucket = PORTRAIT
    levels = feature_levels(*bucket, STRIDES)
    height, width = 350, 240
    gt = np.array([[10, 12, 90, 150], [120, 20, 230, 80], [30, 200, 200, 340],
                   [150, 160, 220, 190]], np.float32)
    classes = np.array([2, 4, 1, 3])
    out = assign_retina_targets(gt, classes, (height, width, 1.0), levels, RETINA_SCALES, RATIOS)
    num_a, num_c = 9, 4
    probs, deltas, start = [], [], 0
    for _, h, w in levels:
        n = num_a * h * w
        labels = out["labels"][start:start + n].reshape(num_a, h, w)
        prob = np.zeros((num_a, num_c, h, w), np.float32)
        a, y, x = np.nonzero(labels >= 1)
        prob[a, labels[a, y, x].astype(int) - 1, y, x] = 0.99
        probs.append(mx.nd.array(prob.reshape(1, num_a * num_c, h, w)))
        deltas.append(mx.nd.array(out["targets"][4 * start:4 * (start + n)]
                                  .reshape(1, 4 * num_a, h, w)))
        start += n
    dets = retina_postprocess(probs, deltas, mx.nd.array([[height, width, 1.0]]),
                              feature_strides=STRIDES, max_det=20).asnumpy()[0]
    kept = dets[dets[:, 5] >= 1]
    assert len(kept) == len(gt)
    for box, cls in zip(gt, classes):
        row = kept[kept[:, 5] == cls]
        assert len(row) == 1
        np.testing.assert_allclose(row[0, :4], box, atol=1e-3)
