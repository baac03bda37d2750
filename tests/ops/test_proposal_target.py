"""Tests of simpledet.ops.proposal_target (C++ op _contrib_ProposalTarget)."""
import mxnet as mx
import numpy as np
import pytest

from simpledet.core.boxes import box_iou, decode_boxes, encode_boxes
from simpledet.ops.proposal_target import proposal_target

STDS = (0.1, 0.1, 0.2, 0.2)


def run(rois, gt_boxes, crowd_boxes=None, **kwargs):
    """The op on NumPy inputs; returns NumPy (rois, labels, bbox_targets, bbox_weights), plus
    gt_index with output_gt_index=True. crowd_boxes (B, M, 4) is the optional third input."""
    if crowd_boxes is not None:
        kwargs["crowd_boxes"] = mx.nd.array(crowd_boxes, dtype="float32")
    out = proposal_target(mx.nd.array(rois, dtype="float32"),
                          mx.nd.array(gt_boxes, dtype="float32"), **kwargs)
    return tuple(o.asnumpy() for o in out)


def crowd_iof_above(boxes, crowd, thresh):
    """(N,) bool: some valid row of crowd (M, 4) covers more than thresh of the box's own area
    ("+1" areas, float32, inter > thresh * area); padding rows: x2 < x1, y2 < y1, x2 < 0 or
    y2 < 0."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    crowd = np.asarray(crowd, np.float32).reshape(-1, 4)
    one = np.float32(1)
    area = (boxes[:, 2] - boxes[:, 0] + one) * (boxes[:, 3] - boxes[:, 1] + one)
    inside = np.zeros(len(boxes), bool)
    for c in crowd:
        if not (c[2] >= c[0] and c[3] >= c[1] and c[2] >= 0 and c[3] >= 0):
            continue  # padding
        iw = np.minimum(boxes[:, 2], c[2]) - np.maximum(boxes[:, 0], c[0]) + one
        ih = np.minimum(boxes[:, 3], c[3]) - np.maximum(boxes[:, 1], c[1]) + one
        inter = np.where((iw > 0) & (ih > 0), iw * ih, np.float32(0))
        inside |= inter > np.float32(thresh) * area
    return inside


def reference(rois, gt_boxes, crowd_boxes=None, *, num_classes, image_rois=512,
              fg_fraction=0.25, fg_thresh=0.5, bg_thresh_hi=0.5, bg_thresh_lo=0.0,
              bbox_means=(0., 0., 0., 0.), bbox_stds=STDS, class_agnostic=False, add_gt=True,
              sample=True, output_gt_index=False, crowd_thresh=0.7):
    """NumPy proposal target; returns what ``run`` returns. With sample, only for configurations
    that need no random draw: every fg candidate fits the quota and the bg candidates exactly
    fill the rest (or there are none, or one). With crowd_boxes (B, M, 4) a would-be bg
    candidate with IoF > crowd_thresh with a valid crowd row of its image is ignored."""
    rois = np.asarray(rois, np.float32)
    gt_boxes = np.asarray(gt_boxes, np.float32)
    batch = gt_boxes.shape[0]
    per_image = rois.shape[0] // batch
    width = 4 if class_agnostic else 4 * num_classes
    outs = []
    for b in range(batch):
        valid = np.flatnonzero(gt_boxes[b, :, 4] > 0)
        gts = gt_boxes[b, valid]
        # Sampling skips padding gt rows; without sampling they are (ignored) rows.
        gt_cand = gt_boxes[b] if not sample else gts
        gt_cand = gt_cand if add_gt else gt_cand[:0]
        cand = np.concatenate([rois[b * per_image:(b + 1) * per_image, 1:5], gt_cand[:, :4]])
        padding = np.concatenate([np.zeros(per_image, bool), gt_cand[:, 4] <= 0])
        if len(gts):
            iou = box_iou(cand, gts[:, :4])
            max_iou, arg = iou.max(axis=1), iou.argmax(axis=1)
            is_fg = (max_iou >= fg_thresh) & ~padding
            is_bg = ~is_fg & (max_iou >= bg_thresh_lo) & (max_iou < bg_thresh_hi) & ~padding
        else:
            arg = np.zeros(len(cand), np.int64)
            is_fg, is_bg = np.zeros(len(cand), bool), ~padding
        if crowd_boxes is not None:
            is_bg &= ~crowd_iof_above(cand, crowd_boxes[b], crowd_thresh)
        fg, bg = np.flatnonzero(is_fg), np.flatnonzero(is_bg)
        if sample:
            num_fg = min(int(np.round(fg_fraction * image_rois)), len(fg))
            assert num_fg == len(fg), "reference: fg would be subsampled"
            num_bg = image_rois - num_fg
            if len(bg) == 1:
                bg = np.repeat(bg, num_bg)
            assert len(bg) in (0, num_bg), "reference: bg would be subsampled"
            num_fill = image_rois - num_fg - len(bg)
            chosen = np.concatenate([fg, bg, np.zeros(num_fill, np.int64)]).astype(np.int64)
            fg_rows, bg_rows = np.arange(num_fg), np.arange(num_fg, num_fg + len(bg))
        else:
            chosen, fg_rows, bg_rows = np.arange(len(cand)), fg, bg
        rows = len(chosen)
        out_rois = np.zeros((rows, 5), np.float32)
        out_rois[:, 0] = b
        out_rois[:, 1:] = cand[chosen]
        labels = -np.ones(rows, np.float32)
        labels[bg_rows] = 0
        matched = arg[chosen[fg_rows]]
        labels[fg_rows] = gts[matched, 4] if len(fg_rows) else 0
        targets = np.zeros((rows, width), np.float32)
        weights = np.zeros((rows, width), np.float32)
        gt_index = -np.ones(rows, np.float32)
        if len(fg_rows):
            gt_index[fg_rows] = valid[matched]
            t = encode_boxes(cand[chosen[fg_rows]], gts[matched, :4], bbox_means, bbox_stds)
            for row, cls, tt in zip(fg_rows, gts[matched, 4].astype(int), t):
                col = 0 if class_agnostic else 4 * cls
                targets[row, col:col + 4] = tt
                weights[row, col:col + 4] = 1
        outs.append((out_rois, labels, targets, weights, gt_index))
    count = 5 if output_gt_index else 4
    return tuple(np.concatenate([o[i] for o in outs]) for i in range(count))


def assert_matches_reference(got, want):
    """Exact rows, labels, weights and gt_index; targets to float32 rounding."""
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, (i, g.shape, w.shape)
        if i == 2:
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(g, w)


def random_boxes(rng, n, gts, size=100.0):
    """n boxes in a size x size image: half jittered copies of gts (if any), half uniform."""
    x1 = rng.uniform(0, size * 0.8, n)
    y1 = rng.uniform(0, size * 0.8, n)
    w = rng.uniform(4, size * 0.4, n)
    h = rng.uniform(4, size * 0.4, n)
    boxes = np.stack([x1, y1, x1 + w, y1 + h], axis=1)
    if len(gts):
        near = rng.random(n) < 0.5
        src = gts[rng.integers(0, len(gts), n), :4]
        gw, gh = src[:, 2] - src[:, 0], src[:, 3] - src[:, 1]
        jitter = rng.normal(0, 0.12, (n, 4)) * np.stack([gw, gh, gw, gh], axis=1)
        boxes[near] = src[near] + jitter[near]
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2] + 1)
    return np.round(boxes, 2).astype(np.float32)


def random_inputs(rng, batch, per_image, gt_rows, num_classes, valid_counts):
    """rois (batch*per_image, 5) and gt_boxes (batch, gt_rows, 5) with valid_counts[b] real
    boxes per image, padding rows (class 0 or -1) interleaved at random positions."""
    gt_boxes = np.zeros((batch, gt_rows, 5), np.float32)
    rois = []
    for b in range(batch):
        real = random_boxes(rng, valid_counts[b], np.zeros((0, 4)))
        rows = np.sort(rng.choice(gt_rows, valid_counts[b], replace=False))
        gt_boxes[b, :, :4] = rng.uniform(0, 50, (gt_rows, 4))
        gt_boxes[b, :, 4] = rng.choice([0, -1], gt_rows)
        gt_boxes[b, rows, :4] = real
        gt_boxes[b, rows, 4] = rng.integers(1, num_classes, valid_counts[b])
        r = np.zeros((per_image, 5), np.float32)
        r[:, 0] = b
        r[:, 1:] = random_boxes(rng, per_image, real)
        rois.append(r)
    return np.concatenate(rois), gt_boxes


def candidates(rois, gt_boxes, b, add_gt=True):
    """Image b's sampling candidates (rois, then its valid gts with add_gt) and valid gts."""
    per_image = rois.shape[0] // gt_boxes.shape[0]
    gts = gt_boxes[b][gt_boxes[b, :, 4] > 0]
    cand = rois[b * per_image:(b + 1) * per_image, 1:5]
    return (np.concatenate([cand, gts[:, :4]]) if add_gt else cand), gts


def candidate_index(cand, boxes):
    """Index in cand of each row of boxes (exact match, first one)."""
    eq = np.all(cand[None, :, :] == boxes[:, None, :], axis=2)
    assert eq.any(axis=1).all(), "an output roi is not one of the candidates"
    return eq.argmax(axis=1)


# ---------------------------------------------------------------------------------------------
# Hand-computed tiny case: 2 rois, 1 gt.
# gt [0, 0, 9, 9] class 2 (10 x 10). roi0 [0, 0, 11, 9] (12 x 10): IoU 100 / 120 = 0.833 -> fg.
# roi1 [5, 0, 14, 9]: IoU 50 / 150 = 0.333 -> bg. Candidates: roi0, roi1, gt (IoU 1, fg).
# Target roi0 -> gt: dx = (4.5 - 5.5) / 12, dy = 0, dw = log(10 / 12), dh = 0, over stds.
HAND_ROIS = np.array([[0, 0, 0, 11, 9], [0, 5, 0, 14, 9]], np.float32)
HAND_GT = np.array([[[0, 0, 9, 9, 2]]], np.float32)
HAND_T0 = np.array([-1 / 12 / 0.1, 0, np.log(10 / 12) / 0.2, 0], np.float32)


def test_hand_computed():
    rois, labels, targets, weights = run(HAND_ROIS, HAND_GT, num_classes=3, image_rois=3,
                                         fg_fraction=1.0)
    np.testing.assert_array_equal(rois, [[0, 0, 0, 11, 9], [0, 0, 0, 9, 9], [0, 5, 0, 14, 9]])
    np.testing.assert_array_equal(labels, [2, 2, 0])
    assert targets.shape == weights.shape == (3, 12)
    expected_t = np.zeros((3, 12), np.float32)
    expected_t[0, 8:12] = HAND_T0
    np.testing.assert_allclose(targets, expected_t, rtol=1e-6, atol=1e-7)
    expected_w = np.zeros((3, 12), np.float32)
    expected_w[:2, 8:12] = 1
    np.testing.assert_array_equal(weights, expected_w)


def test_hand_computed_bg_repeats_and_fg_quota():
    # quota round(0.5 * 4) = 2 fg (both), 2 bg rows from 1 bg candidate: repeated.
    rois, labels, targets, weights = run(HAND_ROIS, HAND_GT, num_classes=3, image_rois=4,
                                         fg_fraction=0.5)
    np.testing.assert_array_equal(rois[:, 1:], [[0, 0, 11, 9], [0, 0, 9, 9], [5, 0, 14, 9],
                                                [5, 0, 14, 9]])
    np.testing.assert_array_equal(labels, [2, 2, 0, 0])
    assert weights[2:].sum() == 0 and targets[2:].sum() == 0


def test_hand_computed_no_bg_gives_ignored_rows():
    # bg range [0.4, 0.5) holds no candidate: rows after the 2 fg are ignored (-1) and hold the
    # first candidate (roi0) with zero weights.
    rois, labels, targets, weights = run(HAND_ROIS, HAND_GT, num_classes=3, image_rois=5,
                                         fg_fraction=1.0, bg_thresh_lo=0.4)
    np.testing.assert_array_equal(labels, [2, 2, -1, -1, -1])
    np.testing.assert_array_equal(rois[2:], np.tile([[0, 0, 0, 11, 9]], (3, 1)))
    assert weights[2:].sum() == 0 and targets[2:].sum() == 0
    np.testing.assert_array_equal(weights.sum(axis=1), [4, 4, 0, 0, 0])


def test_hand_computed_fg_thresh_and_means():
    # fg_thresh 0.9: roi0 (0.833) is no longer fg; with hi 0.9 it is bg; means shift targets.
    means = (0.5, -0.5, 0.25, 1.0)
    rois, labels, targets, weights = run(HAND_ROIS, HAND_GT, num_classes=3, image_rois=3,
                                         fg_fraction=1.0, fg_thresh=0.9, bg_thresh_hi=0.9,
                                         bbox_means=means)
    np.testing.assert_array_equal(rois[:, 1:], [[0, 0, 9, 9], [0, 0, 11, 9], [5, 0, 14, 9]])
    np.testing.assert_array_equal(labels, [2, 0, 0])
    # gt -> gt: zero delta, normalized to -means / stds.
    np.testing.assert_allclose(targets[0, 8:], -np.array(means) / np.array(STDS), rtol=1e-6)
    assert weights[1:].sum() == 0


# ---------------------------------------------------------------------------------------------
# NumPy reference on random inputs, batch 2, no subsampling.

@pytest.mark.parametrize("class_agnostic", [False, True])
def test_reference_random_batch2(class_agnostic):
    rng = np.random.default_rng(0)
    num_classes, per_image = 5, 60
    for trial in range(3):
        # 3 real gt boxes per image (same candidate count), padding rows at random places.
        rois, gt = random_inputs(rng, 2, per_image, 5, num_classes, [3, 3])
        kwargs = dict(num_classes=num_classes, image_rois=per_image + 3, fg_fraction=1.0,
                      fg_thresh=0.5, bg_thresh_hi=0.5, bg_thresh_lo=0.0,
                      bbox_means=(0.01, -0.02, 0.03, 0.0), class_agnostic=class_agnostic)
        got = run(rois, gt, **kwargs)
        want = reference(rois, gt, **kwargs)
        assert (want[1] > 0).sum() >= 10, "test inputs should hold a fair number of fg rois"
        for g, w in zip(got[:2], want[:2]):
            np.testing.assert_array_equal(g, w)
        np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got[3], want[3])


def test_reference_random_with_thresholds_and_padding_rows():
    # bg range [0.1, 0.3) and fg >= 0.6 leave candidates unused; image 1's fg set is smaller
    # than the quota and its bg set cannot fill the rest -> reference only if exact. Use one
    # image per call so image_rois can be matched to the candidate counts.
    rng = np.random.default_rng(1)
    for trial in range(4):
        rois, gt = random_inputs(rng, 1, 50, 4, 3, [2])
        cand, gts = candidates(rois, gt, 0)
        max_iou = box_iou(cand, gts[:, :4]).max(axis=1)
        n_fg = int((max_iou >= 0.6).sum())
        n_bg = int(((max_iou >= 0.1) & (max_iou < 0.3)).sum())
        kwargs = dict(num_classes=3, image_rois=n_fg + n_bg, fg_fraction=1.0, fg_thresh=0.6,
                      bg_thresh_hi=0.3, bg_thresh_lo=0.1)
        got = run(rois, gt, **kwargs)
        want = reference(rois, gt, **kwargs)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_allclose(got[2], want[2], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got[3], want[3])


# ---------------------------------------------------------------------------------------------
# Subsampling.

SUB_KW = dict(num_classes=4, image_rois=40, fg_fraction=0.25, fg_thresh=0.5, bg_thresh_hi=0.5,
              bg_thresh_lo=0.05, bbox_means=(0.0, 0.0, 0.0, 0.0), bbox_stds=STDS)


def check_sampling(rois, gt, out, kw):
    """Properties that hold whatever the random draw (gt_index too when out has it)."""
    o_rois, labels, targets, weights = out[:4]
    batch, S = gt.shape[0], kw["image_rois"]
    quota = int(np.round(kw["fg_fraction"] * S))
    for b in range(batch):
        sl = slice(b * S, (b + 1) * S)
        r, lab, t, w = o_rois[sl], labels[sl], targets[sl], weights[sl]
        assert (r[:, 0] == b).all()
        cand, gts = candidates(rois, gt, b, kw.get("add_gt", True))
        if not len(gts):  # every candidate is background
            idx = candidate_index(cand, r[:, 1:])
            assert (lab == 0).all() and (w == 0).all() and (t == 0).all()
            assert set(idx) == set(range(len(cand))) or len(set(idx)) == S
            if len(out) == 5:
                assert (out[4][sl] == -1).all()
            continue
        max_iou = box_iou(cand, gts[:, :4]).max(axis=1)
        n_fg_cand = int((max_iou >= kw["fg_thresh"]).sum())
        is_bg_cand = ((max_iou >= kw["bg_thresh_lo"]) & (max_iou < kw["bg_thresh_hi"])
                      & (max_iou < kw["fg_thresh"]))
        num_fg = min(quota, n_fg_cand)
        assert (lab > 0).sum() == num_fg
        assert (lab[:num_fg] > 0).all() and (lab[num_fg:] <= 0).all()
        idx = candidate_index(cand, r[:, 1:])
        fg_idx, bg_idx = idx[:num_fg], idx[num_fg:][lab[num_fg:] == 0]
        # fg: distinct, ascending, IoU >= fg_thresh, labelled with the matched gt's class.
        assert (np.diff(fg_idx) > 0).all()
        iou = box_iou(r[:num_fg, 1:], gts[:, :4])
        assert (iou.max(axis=1) >= kw["fg_thresh"]).all()
        matched = gts[iou.argmax(axis=1)]
        np.testing.assert_array_equal(lab[:num_fg], matched[:, 4])
        if len(out) == 5:  # gt_index: the matched gt's row in gt_boxes[b] (padding counted)
            valid_rows = np.flatnonzero(gt[b, :, 4] > 0)
            gt_index = out[4][sl]
            np.testing.assert_array_equal(gt_index[:num_fg], valid_rows[iou.argmax(axis=1)])
            assert (gt_index[num_fg:] == -1).all()
        # targets decode back to the matched gt; weights mark exactly the class columns.
        cls = lab[:num_fg].astype(int)
        cols = 4 * cls[:, None] + np.arange(4)[None, :]
        t_fg = np.take_along_axis(t[:num_fg], cols, axis=1)
        decoded = decode_boxes(r[:num_fg, 1:], t_fg, kw["bbox_means"], kw["bbox_stds"])
        np.testing.assert_allclose(decoded, matched[:, :4], atol=2e-3)
        expected_w = np.zeros_like(w)
        np.put_along_axis(expected_w[:num_fg], cols, 1.0, axis=1)
        np.testing.assert_array_equal(w, expected_w)
        assert (t[num_fg:] == 0).all() and (t * (1 - w) == 0).all()
        # bg: max IoU in [lo, hi), ascending, without repeats when there are enough.
        n_bg_cand = int(is_bg_cand.sum())
        assert is_bg_cand[bg_idx].all()
        assert len(bg_idx) == (S - num_fg if n_bg_cand else 0)
        if n_bg_cand >= S - num_fg:
            assert (np.diff(bg_idx) > 0).all()
        else:
            assert (np.diff(bg_idx) >= 0).all()
            assert set(bg_idx) == set(np.flatnonzero(is_bg_cand))


def test_subsampling_properties_and_seed():
    rng = np.random.default_rng(2)
    rois, gt = random_inputs(rng, 2, 300, 6, SUB_KW["num_classes"], [4, 2])
    for b in range(2):
        cand, gts = candidates(rois, gt, b)
        max_iou = box_iou(cand, gts[:, :4]).max(axis=1)
        assert (max_iou >= 0.5).sum() > 10, "inputs should need fg subsampling"
        assert ((max_iou >= 0.05) & (max_iou < 0.5)).sum() > 30, "and bg subsampling"
    mx.random.seed(7)
    first = run(rois, gt, **SUB_KW)
    check_sampling(rois, gt, first, SUB_KW)
    second = run(rois, gt, **SUB_KW)
    check_sampling(rois, gt, second, SUB_KW)
    assert not np.array_equal(first[0], second[0]), "consecutive draws should differ"
    mx.random.seed(7)
    again = run(rois, gt, **SUB_KW)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    mx.random.seed(8)
    other = run(rois, gt, **SUB_KW)
    assert not np.array_equal(first[0], other[0])
    check_sampling(rois, gt, other, SUB_KW)


@pytest.mark.parametrize("image_rois, fg_fraction, num_fg", [
    (5, 0.5, 2), (7, 0.5, 4), (10, 0.25, 2), (6, 0.25, 2), (8, 0.0, 0), (8, 1.0, 8)])
def test_fg_quota_rounds_half_to_even(image_rois, fg_fraction, num_fg):
    rng = np.random.default_rng(9)
    rois, gt = random_inputs(rng, 1, 100, 3, 3, [3])
    labels = run(rois, gt, num_classes=3, image_rois=image_rois, fg_fraction=fg_fraction)[1]
    assert (labels > 0).sum() == num_fg and (labels[:num_fg] > 0).all()
    assert (labels[num_fg:] == 0).all()


def test_subsampling_bg_with_replacement():
    # Few bg candidates ([0.15, 0.5) only): all of them appear, plus repeats.
    rng = np.random.default_rng(4)
    rois, gt = random_inputs(rng, 2, 40, 3, 3, [2, 3])
    kw = dict(SUB_KW, num_classes=3, bg_thresh_lo=0.15, image_rois=60)
    for b in range(2):
        cand, gts = candidates(rois, gt, b)
        max_iou = box_iou(cand, gts[:, :4]).max(axis=1)
        n_bg = ((max_iou >= 0.15) & (max_iou < 0.5)).sum()
        assert 1 < n_bg < 15
    mx.random.seed(3)
    check_sampling(rois, gt, run(rois, gt, **kw), kw)


def test_subsampling_class_agnostic():
    rng = np.random.default_rng(4)
    rois, gt = random_inputs(rng, 2, 100, 4, 6, [3, 1])
    kw = dict(SUB_KW, num_classes=6, class_agnostic=True)
    o_rois, labels, targets, weights = run(rois, gt, **kw)
    assert targets.shape == weights.shape == (80, 4)
    fg = labels > 0
    assert fg.any()
    np.testing.assert_array_equal(weights, np.repeat(fg[:, None], 4, axis=1).astype(np.float32))
    for b in range(2):
        _, gts = candidates(rois, gt, b)
        rows = np.flatnonzero(fg[b * 40:(b + 1) * 40]) + b * 40
        matched = gts[box_iou(o_rois[rows, 1:], gts[:, :4]).argmax(axis=1), :4]
        decoded = decode_boxes(o_rois[rows, 1:], targets[rows], (0, 0, 0, 0), STDS)
        np.testing.assert_allclose(decoded, matched, atol=2e-3)


# ---------------------------------------------------------------------------------------------
# output_gt_index: the row in gt_boxes[b] of each foreground row's matched gt.

def test_gt_index_hand_computed():
    # The gt sits at row 2 (rows 0 and 1 are padding): the fg rows (roi0, then the gt itself)
    # name row 2, the bg row -1; the other outputs are those of the op without gt_index.
    gt = np.array([[[1, 2, 3, 4, -1], [0, 0, 0, 0, 0], [0, 0, 9, 9, 2]]], np.float32)
    kw = dict(num_classes=3, image_rois=3, fg_fraction=1.0)
    out = run(HAND_ROIS, gt, output_gt_index=True, **kw)
    assert len(out) == 5 and out[4].dtype == np.float32
    np.testing.assert_array_equal(out[1], [2, 2, 0])
    np.testing.assert_array_equal(out[4], [2, 2, -1])
    for g, w in zip(out, run(HAND_ROIS, gt, **kw)):
        np.testing.assert_array_equal(g, w)
    assert_matches_reference(out, reference(HAND_ROIS, gt, output_gt_index=True, **kw))


def test_gt_index_picks_the_best_of_two_gts():
    # roi [0, 0, 11, 9] overlaps gt row 0 [0, 0, 9, 9] (100 / 120) and gt row 1 [2, 0, 11, 9]
    # (100 / 120 too: a tie goes to the first row) and roi [3, 0, 12, 9] is closer to row 1
    # (90 / 110 vs 70 / 130).
    rois = np.array([[0, 0, 0, 11, 9], [0, 3, 0, 12, 9]], np.float32)
    gt = np.array([[[0, 0, 9, 9, 1], [2, 0, 11, 9, 2]]], np.float32)
    out = run(rois, gt, num_classes=3, image_rois=4, fg_fraction=1.0, output_gt_index=True)
    np.testing.assert_array_equal(out[0][:, 1:], [[0, 0, 11, 9], [3, 0, 12, 9], [0, 0, 9, 9],
                                                  [2, 0, 11, 9]])
    np.testing.assert_array_equal(out[1], [1, 2, 1, 2])
    np.testing.assert_array_equal(out[4], [0, 1, 0, 1])


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_gt_index_reference_batch2_with_padding_rows(class_agnostic):
    rng = np.random.default_rng(10)
    for trial in range(3):
        rois, gt = random_inputs(rng, 2, 60, 6, 5, [3, 3])  # 3 padding rows per image
        kw = dict(num_classes=5, image_rois=63, fg_fraction=1.0, class_agnostic=class_agnostic)
        got = run(rois, gt, output_gt_index=True, **kw)
        assert_matches_reference(got, reference(rois, gt, output_gt_index=True, **kw))
        labels, gt_index = got[1], got[4]
        fg = labels > 0
        assert fg.sum() >= 10 and (gt_index[fg] >= 0).all() and (gt_index[~fg] == -1).all()
        image = np.repeat(np.arange(2), 63)
        np.testing.assert_array_equal(gt[image[fg], gt_index[fg].astype(int), 4], labels[fg])
        for g, w in zip(got, run(rois, gt, **kw)):
            np.testing.assert_array_equal(g, w)


def test_gt_index_subsampled_with_a_gt_less_image():
    rng = np.random.default_rng(11)
    rois, gt = random_inputs(rng, 3, 200, 5, 4, [3, 0, 2])
    kw = dict(SUB_KW, output_gt_index=True)
    mx.random.seed(4)
    out = run(rois, gt, **kw)
    check_sampling(rois, gt, out, kw)
    assert (out[1] > 0).sum() > 10
    np.testing.assert_array_equal(out[4][40:80], -np.ones(40))
    mx.random.seed(4)  # the same draw as without gt_index
    for g, w in zip(out, run(rois, gt, **SUB_KW)):
        np.testing.assert_array_equal(g, w)


# ---------------------------------------------------------------------------------------------
# add_gt=False: only the rois are candidates.

def test_add_gt_false_hand_computed():
    # roi0 [5, 0, 14, 9]: IoU 0.333 with the gt -> bg; roi1 far away: IoU 0 < bg_thresh_lo ->
    # neither. Only the appended gt can be fg.
    rois = np.array([[0, 5, 0, 14, 9], [0, 20, 20, 30, 30]], np.float32)
    kw = dict(num_classes=3, image_rois=2, fg_fraction=0.5, bg_thresh_lo=0.1,
              output_gt_index=True)
    with_gt = run(rois, HAND_GT, **kw)
    np.testing.assert_array_equal(with_gt[0][:, 1:], [[0, 0, 9, 9], [5, 0, 14, 9]])
    np.testing.assert_array_equal(with_gt[1], [2, 0])
    np.testing.assert_array_equal(with_gt[4], [0, -1])
    # Without it there is no fg: both rows are the one bg candidate (repeated).
    without = run(rois, HAND_GT, add_gt=False, **kw)
    np.testing.assert_array_equal(without[0], [[0, 5, 0, 14, 9]] * 2)
    np.testing.assert_array_equal(without[1], [0, 0])
    np.testing.assert_array_equal(without[4], [-1, -1])
    assert without[2].sum() == 0 and without[3].sum() == 0
    for add_gt, got in ((True, with_gt), (False, without)):
        assert_matches_reference(got, reference(rois, HAND_GT, add_gt=add_gt, **kw))


def no_gt_rows(out_rois, gt, S):
    """No output row of image b is one of its gt boxes."""
    for b in range(gt.shape[0]):
        boxes = out_rois[b * S:(b + 1) * S, 1:]
        assert not np.all(boxes[:, None, :] == gt[b, None, :, :4], axis=2).any()


def test_add_gt_false_reference_and_subsampling():
    rng = np.random.default_rng(12)
    rois, gt = random_inputs(rng, 2, 60, 5, 4, [3, 3])
    # Exact: image_rois = R and every roi is fg or bg.
    kw = dict(num_classes=4, image_rois=60, fg_fraction=1.0, add_gt=False,
              output_gt_index=True)
    got = run(rois, gt, **kw)
    assert_matches_reference(got, reference(rois, gt, **kw))
    assert (got[1] > 0).sum() >= 10
    no_gt_rows(got[0], gt, 60)
    # Subsampled from the rois only; with the gts added the rows differ.
    rois, gt = random_inputs(rng, 2, 300, 6, SUB_KW["num_classes"], [4, 2])
    kw = dict(SUB_KW, add_gt=False, output_gt_index=True)
    mx.random.seed(5)
    without = run(rois, gt, **kw)
    check_sampling(rois, gt, without, kw)
    no_gt_rows(without[0], gt, kw["image_rois"])
    mx.random.seed(5)
    with_gt = run(rois, gt, **dict(kw, add_gt=True))
    assert not np.array_equal(with_gt[0], without[0])


# ---------------------------------------------------------------------------------------------
# sample=False: every candidate is a row, in candidate order.

def test_sample_false_hand_computed():
    # fg_thresh 0.9, bg [0, 0.5): roi0 (IoU 0.833) lies between the thresholds -> ignored;
    # roi1 (0.333) bg; the gt (1.0) fg; the padding gt row: -1 with its own box.
    gt = np.array([[[0, 0, 9, 9, 2], [1, 2, 3, 4, -1]]], np.float32)
    kw = dict(num_classes=3, fg_thresh=0.9, sample=False, output_gt_index=True)
    rois, labels, targets, weights, gt_index = run(HAND_ROIS, gt, **kw)
    np.testing.assert_array_equal(rois, [[0, 0, 0, 11, 9], [0, 5, 0, 14, 9], [0, 0, 0, 9, 9],
                                         [0, 1, 2, 3, 4]])
    np.testing.assert_array_equal(labels, [-1, 0, 2, -1])
    np.testing.assert_array_equal(gt_index, [-1, -1, 0, -1])
    expected_w = np.zeros((4, 12), np.float32)
    expected_w[2, 8:12] = 1
    np.testing.assert_array_equal(weights, expected_w)
    assert (targets == 0).all()  # gt -> itself, zero means
    # image_rois and fg_fraction are unused; without add_gt the rows are the 2 rois.
    again = run(HAND_ROIS, gt, image_rois=1, fg_fraction=0.0, **kw)
    for g, w in zip(again, (rois, labels, targets, weights, gt_index)):
        np.testing.assert_array_equal(g, w)
    rois, labels, targets, weights, gt_index = run(HAND_ROIS, gt, add_gt=False, **kw)
    np.testing.assert_array_equal(rois, HAND_ROIS)
    np.testing.assert_array_equal(labels, [-1, 0])
    np.testing.assert_array_equal(gt_index, [-1, -1])
    assert weights.sum() == 0
    # With fg_thresh 0.5 roi0 is fg with the hand-computed target.
    out = run(HAND_ROIS, gt, num_classes=3, sample=False, output_gt_index=True)
    np.testing.assert_array_equal(out[1], [2, 0, 2, -1])
    np.testing.assert_array_equal(out[4], [0, -1, 0, -1])
    np.testing.assert_allclose(out[2][0, 8:12], HAND_T0, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("add_gt", [True, False])
@pytest.mark.parametrize("class_agnostic", [False, True])
def test_sample_false_reference(add_gt, class_agnostic):
    # 3 images, the second without gt; fg >= 0.6, bg [0.1, 0.4): candidates between 0.4 and
    # 0.6 and under 0.1 are ignored rows.
    rng = np.random.default_rng(13)
    rois, gt = random_inputs(rng, 3, 40, 5, 4, [3, 0, 2])
    kw = dict(num_classes=4, fg_thresh=0.6, bg_thresh_hi=0.4, bg_thresh_lo=0.1,
              bbox_means=(0.01, -0.02, 0.03, 0.0), class_agnostic=class_agnostic,
              add_gt=add_gt, sample=False, output_gt_index=True)
    got = run(rois, gt, **kw)
    assert_matches_reference(got, reference(rois, gt, **kw))
    S = 40 + (5 if add_gt else 0)
    assert got[1].shape == (3 * S,)
    for b in range(3):
        rows = got[0][b * S:(b + 1) * S]
        assert (rows[:, 0] == b).all()
        np.testing.assert_array_equal(rows[:40, 1:], rois[b * 40:(b + 1) * 40, 1:])
        if add_gt:
            np.testing.assert_array_equal(rows[40:, 1:], gt[b, :, :4])
            np.testing.assert_array_equal(got[1][b * S + 40:(b + 1) * S][gt[b, :, 4] <= 0], -1)
    labels = got[1]
    assert (labels[1 * S:1 * S + 40] == 0).all()  # no gt: every roi is background
    for b in (0, 2):
        cand, gts = candidates(rois, gt, b, add_gt=False)
        max_iou = box_iou(cand, gts[:, :4]).max(axis=1)
        between = (max_iou >= 0.4) & (max_iou < 0.6)
        assert between.any(), "inputs should hold rois between the thresholds"
        assert (labels[b * S:b * S + 40][between] == -1).all()
        assert ((labels[b * S:b * S + 40] > 0) == (max_iou >= 0.6)).all()
    assert (got[3][labels <= 0] == 0).all() and (got[4][labels <= 0] == -1).all()


def test_sample_false_draws_nothing():
    rng = np.random.default_rng(14)
    rois, gt = random_inputs(rng, 2, 300, 6, SUB_KW["num_classes"], [4, 2])
    mx.random.seed(6)
    first = run(rois, gt, **SUB_KW)
    mx.random.seed(6)
    run(rois, gt, **dict(SUB_KW, sample=False))
    after = run(rois, gt, **SUB_KW)
    for a, b in zip(first, after):
        np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# Images without gt, shapes, graphs.

def test_image_with_zero_gt_boxes():
    rng = np.random.default_rng(5)
    rois, gt = random_inputs(rng, 2, 30, 4, 3, [2, 0])
    assert (gt[1, :, 4] <= 0).all()
    kw = dict(num_classes=3, image_rois=32, fg_fraction=0.0, bg_thresh_lo=0.0)
    # Image 0: only checked by properties (it subsamples); image 1: every roi is bg, 30 < 32
    # candidates so all appear plus 2 repeats, in ascending order.
    mx.random.seed(0)
    o_rois, labels, targets, weights = run(rois, gt, **kw)
    im1 = slice(32, 64)
    assert (labels[im1] == 0).all()
    assert (o_rois[im1, 0] == 1).all()
    idx = candidate_index(rois[30:, 1:], o_rois[im1, 1:])
    assert set(idx) == set(range(30)) and (np.diff(idx) >= 0).all()
    assert weights[im1].sum() == 0 and targets[im1].sum() == 0
    # With image_rois == R it is exact, also when every image lacks gt.
    kw["image_rois"] = 30
    gt_none = gt.copy()
    gt_none[:, :, 4] = 0
    got = run(rois, gt_none, **kw)
    want = reference(rois, gt_none, **kw)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(got[0], rois)


def test_gt_only_candidates_and_exact_rows():
    # Every roi far from the gts and outside the bg range: only the gts are usable.
    rois = np.array([[0, 200, 200, 220, 220], [0, 300, 300, 310, 310],
                     [1, 200, 200, 220, 220], [1, 300, 300, 310, 310]], np.float32)
    gt = np.array([[[0, 0, 20, 30, 1], [10, 10, 40, 40, 2]],
                   [[0, 0, 0, 0, 0], [5, 5, 15, 25, 3]]], np.float32)
    kw = dict(num_classes=4, image_rois=4, fg_fraction=0.5, bg_thresh_lo=0.1)
    got = run(rois, gt, **kw)
    want = reference(rois, gt, **kw)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    np.testing.assert_array_equal(got[1], [1, 2, -1, -1, 3, -1, -1, -1])
    np.testing.assert_array_equal(got[0][2:4], np.tile([[0, 200, 200, 220, 220]], (2, 1)))


def test_output_shapes_symbolic():
    rois = mx.sym.Variable("rois")
    gt = mx.sym.Variable("gt_boxes")
    for agnostic, width in ((False, 4 * 7), (True, 4)):
        outs = proposal_target(rois, gt, num_classes=7, image_rois=16, class_agnostic=agnostic,
                               name="pt")
        assert len(outs) == 4
        group = mx.sym.Group(list(outs))
        _, out_shapes, _ = group.infer_shape(rois=(3 * 100, 5), gt_boxes=(3, 9, 5))
        assert out_shapes == [(48, 5), (48,), (48, width), (48, width)]
        _, out_types, _ = group.infer_type(rois="float32", gt_boxes="float32")
        assert all(t == np.float32 for t in out_types)


@pytest.mark.parametrize("add_gt, sample, output_gt_index, rows", [
    (True, True, False, 16), (True, True, True, 16), (False, True, True, 16),
    (True, False, False, 109), (True, False, True, 109), (False, False, False, 100),
    (False, False, True, 100)])
def test_output_shapes_for_each_option(add_gt, sample, output_gt_index, rows):
    # 3 images of R = 100 rois and G = 9 gt rows; S = image_rois, or R + G / R unsampled.
    rois = mx.sym.Variable("rois")
    gt = mx.sym.Variable("gt_boxes")
    kw = dict(num_classes=7, image_rois=16, add_gt=add_gt, sample=sample,
              output_gt_index=output_gt_index)
    outs = proposal_target(rois, gt, name="pt", **kw)
    count = 5 if output_gt_index else 4
    assert len(outs) == count
    raw = mx.sym.contrib.ProposalTarget(rois, gt, **{k: str(v) for k, v in kw.items()})
    assert len(raw.list_outputs()) == count
    group = mx.sym.Group(list(outs))
    _, out_shapes, _ = group.infer_shape(rois=(3 * 100, 5), gt_boxes=(3, 9, 5))
    n = 3 * rows
    assert out_shapes == [(n, 5), (n,), (n, 28), (n, 28), (n,)][:count]
    _, out_types, _ = group.infer_type(rois="float32", gt_boxes="float32")
    assert len(out_types) == count and all(t == np.float32 for t in out_types)
    # The NDArray path gives the same shapes.
    rng = np.random.default_rng(15)
    rois_np, gt_np = random_inputs(rng, 3, 100, 9, 7, [2, 0, 9])
    got = run(rois_np, gt_np, **kw)
    assert [g.shape for g in got] == out_shapes


@pytest.mark.parametrize("output_gt_index, with_crowd", [(False, False), (True, False),
                                                         (True, True)])
def test_module_forward_backward(output_gt_index, with_crowd):
    # Module slices data on axis 0, so rois enter as (B, R, 5) and are flattened in the graph.
    rois = mx.sym.reshape(mx.sym.Variable("rois"), shape=(-1, 5))
    gt = mx.sym.Variable("gt_boxes")
    crowd = mx.sym.Variable("crowd_boxes") if with_crowd else None
    outs = proposal_target(rois, gt, num_classes=3, image_rois=16,
                           output_gt_index=output_gt_index, crowd_boxes=crowd,
                           name="proposal_target")
    s_rois, labels, targets, weights = outs[:4]
    feat = mx.sym.FullyConnected(s_rois / 100.0, num_hidden=8, name="fc")
    cls = mx.sym.FullyConnected(feat, num_hidden=3, name="cls")
    reg = mx.sym.FullyConnected(feat, num_hidden=12, name="reg")
    cls_loss = mx.sym.SoftmaxOutput(cls, label=labels, use_ignore=True, ignore_label=-1,
                                    normalization="valid", name="cls_prob")
    reg_loss = mx.sym.MakeLoss(mx.sym.sum(weights * mx.sym.smooth_l1(reg - targets, scalar=1.0))
                               / 32.0, name="reg_loss")
    extra = [mx.sym.BlockGrad(outs[4])] if output_gt_index else []
    extra += [mx.sym.BlockGrad(s_rois)] if with_crowd else []
    net = mx.sym.Group([cls_loss, reg_loss, mx.sym.BlockGrad(labels)] + extra)
    names = ["rois", "gt_boxes"] + (["crowd_boxes"] if with_crowd else [])
    shapes = [(2, 50, 5), (2, 3, 5), (2, 2, 4)][:len(names)]
    mod = mx.mod.Module(net, data_names=names, label_names=None, context=mx.cpu())
    mod.bind(data_shapes=list(zip(names, shapes)), for_training=True, inputs_need_grad=True)
    mod.init_params(mx.init.Xavier())
    rng = np.random.default_rng(6)
    rois_np, gt_np = random_inputs(rng, 2, 50, 3, 3, [2, 1])
    crowd_np = np.array([[[0, 0, 40, 40], [-1, -1, -1, -1]], [[-1] * 4, [-1] * 4]], np.float32)
    arrays = [rois_np.reshape(2, 50, 5), gt_np, crowd_np][:len(names)]
    batch = mx.io.DataBatch([mx.nd.array(a) for a in arrays])
    mod.forward(batch, is_train=True)
    mod.backward()
    out_labels = mod.get_outputs()[2].asnumpy()
    assert out_labels.shape == (32,) and (out_labels > 0).any()
    if with_crowd:  # image 0's bg rows avoid its crowd region; image 1 has none
        s_rois_np = mod.get_outputs()[-1].asnumpy()
        bg0 = s_rois_np[:16][out_labels[:16] == 0, 1:]
        assert len(bg0) and not crowd_iof_above(bg0, crowd_np[0], 0.7).any()
    if output_gt_index:
        gt_index = mod.get_outputs()[3].asnumpy()
        fg = out_labels > 0
        assert gt_index.shape == (32,) and (gt_index[~fg] == -1).all()
        image = np.repeat(np.arange(2), 16)
        np.testing.assert_array_equal(gt_np[image[fg], gt_index[fg].astype(int), 4],
                                      out_labels[fg])
    grads = mod._exec_group.grad_arrays
    names = mod._exec_group.param_names
    for name, g in zip(names, grads):
        g = g[0].asnumpy()
        assert np.isfinite(g).all(), name
        assert np.abs(g).sum() > 0, f"{name} got no gradient"
    for g in mod.get_input_grads():
        assert (g.asnumpy() == 0).all()


# ---------------------------------------------------------------------------------------------
# crowd_boxes: a would-be background candidate covered more than crowd_thresh by a crowd region
# of its image is ignored (Detectron's crowd_thresh); foreground stays foreground.
# Hand case: the gt [0, 0, 9, 9] (class 2) lies inside the crowd region [0, 0, 39, 19].
# r0 [0, 0, 11, 9]: IoU 0.833 -> fg, IoF 1. r1 [25, 2, 34, 11]: IoU 0 -> bg, IoF 1.
# r2 [30, 10, 49, 19]: bg, its lower half (x 30..39, 100 of 200 pixels) in the region: IoF 0.5.
# r3 [60, 60, 69, 69]: bg, IoF 0. r4 [-1, -1, -1, -1]: a 1-pixel bg box that only the padding
# row [-1, -1, -1, -1] would cover (IoF 1 if that row counted as a region).
CROWD_ROIS = np.array([[0, 0, 0, 11, 9], [0, 25, 2, 34, 11], [0, 30, 10, 49, 19],
                       [0, 60, 60, 69, 69], [0, -1, -1, -1, -1]], np.float32)
CROWD = np.array([[[-1, -1, -1, -1], [0, 0, 39, 19], [50, 50, 40, 40]]], np.float32)


def test_crowd_iof_of_the_hand_case():
    np.testing.assert_array_equal(crowd_iof_above(CROWD_ROIS[:, 1:], CROWD[0], 0.49),
                                  [True, True, True, False, False])
    np.testing.assert_array_equal(crowd_iof_above(CROWD_ROIS[:, 1:], CROWD[0], 0.5),
                                  [True, True, False, False, False])
    np.testing.assert_array_equal(crowd_iof_above(CROWD_ROIS[:, 1:], CROWD[0, 1:2], 0.99),
                                  [True, True, False, False, False])


@pytest.mark.parametrize("crowd_thresh, labels", [
    (0.7, [2, -1, 0, 0, 0, 2]),  # r1 ignored; r2 (IoF 0.5) stays bg
    (0.5, [2, -1, 0, 0, 0, 2]),  # IoF exactly 0.5 is not more than 0.5
    (0.4, [2, -1, -1, 0, 0, 2]),  # r2 ignored too
    (1.0, [2, 0, 0, 0, 0, 2]),  # nothing covers more than all of a box
    (0.0, [2, -1, -1, 0, 0, 2])])  # any overlap
def test_crowd_hand_computed_unsampled(crowd_thresh, labels):
    kw = dict(num_classes=3, sample=False, output_gt_index=True)
    plain = run(CROWD_ROIS, HAND_GT, **kw)
    np.testing.assert_array_equal(plain[1], [2, 0, 0, 0, 0, 2])
    got = run(CROWD_ROIS, HAND_GT, CROWD, crowd_thresh=crowd_thresh, **kw)
    np.testing.assert_array_equal(got[1], labels)
    assert_matches_reference(got, reference(CROWD_ROIS, HAND_GT, CROWD,
                                            crowd_thresh=crowd_thresh, **kw))
    # Only labels of would-be bg candidates change; the fg rows (r0 inside the region, the gt)
    # keep their targets and gt rows: everything but the labels is as without crowd.
    for i in (0, 2, 3, 4):
        np.testing.assert_array_equal(got[i], plain[i])
    np.testing.assert_allclose(got[2][0, 8:12], HAND_T0, rtol=1e-6, atol=1e-7)


def test_crowd_hand_computed_sampled():
    # quota round(0.4 * 5) = 2 fg (r0 and the gt), then exactly the 3 bg candidates r2, r3, r4:
    # r1 (in the region) is no row; the same draw-free rows as the reference.
    kw = dict(num_classes=3, image_rois=5, fg_fraction=0.4, output_gt_index=True)
    got = run(CROWD_ROIS, HAND_GT, CROWD, **kw)
    np.testing.assert_array_equal(got[0], [[0, 0, 0, 11, 9], [0, 0, 0, 9, 9],
                                           [0, 30, 10, 49, 19], [0, 60, 60, 69, 69],
                                           [0, -1, -1, -1, -1]])
    np.testing.assert_array_equal(got[1], [2, 2, 0, 0, 0])
    np.testing.assert_array_equal(got[4], [0, 0, -1, -1, -1])
    np.testing.assert_allclose(got[2][0, 8:12], HAND_T0, rtol=1e-6, atol=1e-7)
    assert_matches_reference(got, reference(CROWD_ROIS, HAND_GT, CROWD, **kw))
    # With repeats (40 rows from 3 bg candidates) r1 never appears, whatever the draw; with the
    # threshold above r1's IoF (1.0) it is a bg row again.
    r1 = CROWD_ROIS[1, 1:]
    for seed in range(5):
        mx.random.seed(seed)
        rows = run(CROWD_ROIS, HAND_GT, CROWD, num_classes=3, image_rois=40)[0][:, 1:]
        assert not np.all(rows == r1, axis=1).any()
    mx.random.seed(0)
    out = run(CROWD_ROIS, HAND_GT, CROWD, num_classes=3, image_rois=40, crowd_thresh=1.0)
    assert np.all(out[0][:, 1:] == r1, axis=1).any()
    assert (out[1][np.all(out[0][:, 1:] == r1, axis=1)] == 0).all()


def test_crowd_everything_in_a_region_gives_ignored_fill_rows():
    # A region over the whole image: no bg candidate is left, the rows after the fg are -1.
    crowd = np.array([[[0, 0, 99, 99]]], np.float32)
    got = run(CROWD_ROIS[:4], HAND_GT, crowd, num_classes=3, image_rois=5, fg_fraction=1.0)
    np.testing.assert_array_equal(got[1], [2, 2, -1, -1, -1])
    np.testing.assert_array_equal(got[0][2:], np.tile(CROWD_ROIS[:1], (3, 1)))
    assert got[3][2:].sum() == 0


def test_crowd_image_without_gt():
    # Without gt every candidate would be bg: those in the region are ignored instead.
    no_gt = np.array([[[0, 0, 0, 0, -1]]], np.float32)
    got = run(CROWD_ROIS, no_gt, CROWD, num_classes=3, sample=False)
    np.testing.assert_array_equal(got[1], [-1, -1, 0, 0, 0, -1])  # last: the padding gt row
    assert_matches_reference(got, reference(CROWD_ROIS, no_gt, CROWD, num_classes=3,
                                            sample=False))


def random_crowd(rng, batch, rows, counts, side=(20, 50), size=100.0):
    """(batch, rows, 4) crowd regions with sides in ``side`` pixels, counts[b] real rows per
    image at random positions, the other rows padding (-1 rows, and rows with x2 < x1)."""
    crowd = -np.ones((batch, rows, 4), np.float32)
    for b in range(batch):
        pad = rng.random(rows) < 0.5
        crowd[b, pad] = [60, 5, 20, 30]  # x2 < x1: padding too
        at = rng.choice(rows, counts[b], replace=False)
        x1, y1 = rng.uniform(0, size * 0.6, (2, counts[b]))
        w, h = rng.uniform(*side, (2, counts[b]))
        crowd[b, at] = np.round(np.stack([x1, y1, x1 + w, y1 + h], axis=1), 2)
    return crowd


@pytest.mark.parametrize("crowd_thresh", [0.7, 0.3])
@pytest.mark.parametrize("add_gt", [True, False])
def test_crowd_reference_batch2_unsampled(crowd_thresh, add_gt):
    # 3 images (the second without gt), 2 and 1 and 0 crowd regions among 4 rows; every
    # candidate is a row, so the whole output is exact.
    rng = np.random.default_rng(20)
    rois, gt = random_inputs(rng, 3, 80, 5, 4, [3, 0, 2])
    crowd = random_crowd(rng, 3, 4, [2, 1, 0])
    kw = dict(num_classes=4, fg_thresh=0.6, bg_thresh_hi=0.5, bg_thresh_lo=0.05,
              add_gt=add_gt, sample=False, output_gt_index=True, crowd_thresh=crowd_thresh)
    got = run(rois, gt, crowd, **kw)
    assert_matches_reference(got, reference(rois, gt, crowd, **kw))
    plain = run(rois, gt, **{k: v for k, v in kw.items() if k != "crowd_thresh"})
    changed = got[1] != plain[1]
    assert changed.sum() >= 5, "inputs should put bg candidates in the crowd regions"
    assert (plain[1][changed] == 0).all() and (got[1][changed] == -1).all()
    S = len(got[1]) // 3
    assert not changed[2 * S:].any()  # the image without crowd regions
    for i in (0, 2, 3, 4):
        np.testing.assert_array_equal(got[i], plain[i])


def test_crowd_reference_batch2_sampled():
    # Image 1 is image 0 with its crowd rows shuffled among more padding: with every fg
    # candidate and exactly the bg candidates as rows (image_rois = #fg + #bg) nothing is drawn
    # and both images give the reference's rows.
    rng = np.random.default_rng(21)
    rois, gt = random_inputs(rng, 1, 60, 4, 3, [3])
    crowd0 = random_crowd(rng, 1, 3, [2])[0]
    real = crowd0[(crowd0[:, 2] >= crowd0[:, 0]) & (crowd0[:, 2] >= 0)]
    assert len(real) == 2
    crowd1 = -np.ones((3, 4), np.float32)
    crowd1[[2, 0]] = real
    crowd = np.stack([crowd0, crowd1])
    rois2 = np.concatenate([rois, rois])
    rois2[60:, 0] = 1
    gt2 = np.concatenate([gt, gt])
    cand, gts = candidates(rois, gt, 0)
    max_iou = box_iou(cand, gts[:, :4]).max(axis=1)
    bg = (max_iou < 0.5) & ~crowd_iof_above(cand, real, 0.7)
    n_fg, n_bg = int((max_iou >= 0.5).sum()), int(bg.sum())
    assert n_fg >= 5 and ((max_iou < 0.5) & ~bg).sum() >= 3
    kw = dict(num_classes=3, image_rois=n_fg + n_bg, fg_fraction=1.0, output_gt_index=True)
    got = run(rois2, gt2, crowd, **kw)
    assert_matches_reference(got, reference(rois2, gt2, crowd, **kw))
    S = n_fg + n_bg
    np.testing.assert_array_equal(got[0][S:, 1:], got[0][:S, 1:])
    for i in range(1, 5):
        np.testing.assert_array_equal(got[i][S:], got[i][:S])


def test_crowd_padding_rows_and_zero_crowd_change_nothing():
    rng = np.random.default_rng(22)
    rois, gt = random_inputs(rng, 2, 300, 6, SUB_KW["num_classes"], [4, 2])
    kw = dict(SUB_KW, output_gt_index=True)
    mx.random.seed(9)
    plain = run(rois, gt, **kw)
    # Only padding rows (-1, x2 < x1, a box left of the image): the op without crowd_boxes,
    # subsampling draws included.
    padding = np.array([[-1, -1, -1, -1], [60, 5, 20, 30], [-30, 10, -5, 90]], np.float32)
    mx.random.seed(9)
    got = run(rois, gt, np.stack([padding, padding]), **kw)
    for g, w in zip(got, plain):
        np.testing.assert_array_equal(g, w)
    # Padding rows around real ones change nothing either: same as the real rows alone.
    real = np.array([[[10, 10, 60, 50]], [[40, 0, 99, 40]]], np.float32)
    mixed = np.concatenate([np.stack([padding, padding]), real], axis=1)[:, [1, 3, 0, 2]]
    mx.random.seed(9)
    want = run(rois, gt, real, **kw)
    mx.random.seed(9)
    got = run(rois, gt, mixed, **kw)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert not np.array_equal(want[0], plain[0])


def test_crowd_subsampling_properties():
    # Subsampled with crowd regions: the fg block is the one drawn without them (fg is drawn
    # first, from the same candidates), no bg row lies in a region, bg rows fill the rest.
    rng = np.random.default_rng(23)
    rois, gt = random_inputs(rng, 2, 300, 6, SUB_KW["num_classes"], [4, 2])
    crowd = random_crowd(rng, 2, 5, [3, 2], side=(40, 70))
    kw = dict(SUB_KW, output_gt_index=True)
    S = kw["image_rois"]
    for seed in (1, 2):
        mx.random.seed(seed)
        plain = run(rois, gt, **kw)
        mx.random.seed(seed)
        got = run(rois, gt, crowd, **kw)
        for b in range(2):
            sl = slice(b * S, (b + 1) * S)
            fg = got[1][sl] > 0
            np.testing.assert_array_equal(fg, plain[1][sl] > 0)
            for i in range(5):
                np.testing.assert_array_equal(got[i][sl][fg], plain[i][sl][fg])
            bg_rows = got[0][sl][got[1][sl] == 0, 1:]
            assert len(bg_rows) == S - fg.sum()
            assert not crowd_iof_above(bg_rows, crowd[b], 0.7).any()
            cand, gts = candidates(rois, gt, b)
            max_iou = box_iou(cand, gts[:, :4]).max(axis=1)
            would_be_bg = (max_iou >= 0.05) & (max_iou < 0.5)
            assert (would_be_bg & crowd_iof_above(cand, crowd[b], 0.7)).sum() >= 10
            plain_bg = plain[0][sl][plain[1][sl] == 0, 1:]
            assert crowd_iof_above(plain_bg, crowd[b], 0.7).any()


def test_crowd_output_shapes_and_types():
    rois = mx.sym.Variable("rois")
    gt = mx.sym.Variable("gt_boxes")
    crowd = mx.sym.Variable("crowd_boxes")
    outs = proposal_target(rois, gt, num_classes=7, image_rois=16, crowd_boxes=crowd,
                           output_gt_index=True, name="pt")
    group = mx.sym.Group(list(outs))
    assert group.list_arguments() == ["rois", "gt_boxes", "crowd_boxes"]
    _, out_shapes, _ = group.infer_shape(rois=(300, 5), gt_boxes=(3, 9, 5),
                                         crowd_boxes=(3, 16, 4))
    assert out_shapes == [(48, 5), (48,), (48, 28), (48, 28), (48,)]
    _, out_types, _ = group.infer_type(rois="float32", gt_boxes="float32",
                                       crowd_boxes="float32")
    assert all(t == np.float32 for t in out_types)
    raw = mx.sym.contrib.ProposalTarget(rois, gt, crowd, num_classes="7", has_crowd="True")
    assert raw.list_arguments() == ["rois", "gt_boxes", "crowd_boxes"]
    for shape in ((2, 16, 4), (3, 16, 5), (3, 16)):
        with pytest.raises(mx.base.MXNetError, match="crowd_boxes must be"):
            raw.infer_shape(rois=(300, 5), gt_boxes=(3, 9, 5), crowd_boxes=shape)
    with pytest.raises(mx.base.MXNetError, match="crowd_boxes must be float32"):
        raw.infer_type(rois="float32", gt_boxes="float32", crowd_boxes="float64")
    with pytest.raises(mx.base.MXNetError, match="zero-size"):
        mx.nd.contrib.ProposalTarget(mx.nd.array(HAND_ROIS), mx.nd.array(HAND_GT),
                                     mx.nd.array(np.zeros((1, 0, 4))), num_classes="3",
                                     has_crowd="True")


def test_crowd_bad_arguments():
    with pytest.raises(ValueError, match="crowd_thresh"):
        run(HAND_ROIS, HAND_GT, CROWD, num_classes=3, crowd_thresh=1.5)
    with pytest.raises(TypeError, match="crowd_thresh"):
        run(HAND_ROIS, HAND_GT, CROWD, num_classes=3, crowd_thresh="0.7")
    with pytest.raises(ValueError, match="crowd_boxes must be"):
        run(HAND_ROIS, HAND_GT, CROWD[0], num_classes=3)
    with pytest.raises(ValueError, match="crowd_boxes must be"):
        run(HAND_ROIS, HAND_GT, np.zeros((2, 1, 4)), num_classes=3)
    with pytest.raises(ValueError, match="non-empty"):
        run(HAND_ROIS, HAND_GT, np.zeros((1, 0, 4)), num_classes=3)
    with pytest.raises(TypeError, match="crowd_boxes must be float32"):
        proposal_target(mx.nd.array(HAND_ROIS), mx.nd.array(HAND_GT), num_classes=3,
                        crowd_boxes=mx.nd.array(CROWD, dtype="float64"))
    with pytest.raises(TypeError, match="all be mx.sym.Symbol"):
        proposal_target(mx.nd.array(HAND_ROIS), mx.nd.array(HAND_GT), num_classes=3,
                        crowd_boxes=mx.sym.Variable("crowd"))
    # The op: crowd_thresh without has_crowd (a third input nobody passes) is refused.
    with pytest.raises(mx.base.MXNetError, match="has_crowd"):
        mx.nd.contrib.ProposalTarget(mx.nd.array(HAND_ROIS), mx.nd.array(HAND_GT),
                                     num_classes="3", crowd_thresh="0.7")
    with pytest.raises(mx.base.MXNetError, match="crowd_thresh must be in"):
        mx.nd.contrib.ProposalTarget(mx.nd.array(HAND_ROIS), mx.nd.array(HAND_GT),
                                     mx.nd.array(CROWD), num_classes="3", has_crowd="True",
                                     crowd_thresh="2")


# ---------------------------------------------------------------------------------------------
# Errors.

@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(num_classes=1), ValueError, "num_classes"),
    (dict(num_classes=2.0), TypeError, "num_classes"),
    (dict(num_classes=3, image_rois=0), ValueError, "image_rois"),
    (dict(num_classes=3, fg_fraction=1.5), ValueError, "fg_fraction"),
    (dict(num_classes=3, fg_thresh=-0.1), ValueError, "fg_thresh"),
    (dict(num_classes=3, bg_thresh_lo=0.6, bg_thresh_hi=0.5), ValueError, "bg_thresh_lo"),
    (dict(num_classes=3, bbox_means=(0, 0, 0)), ValueError, "bbox_means"),
    (dict(num_classes=3, bbox_stds=(0.1, 0.1, 0.2, 0)), ValueError, "bbox_stds"),
    (dict(num_classes=3, bbox_stds=0.1), TypeError, "bbox_stds"),
    (dict(num_classes=3, class_agnostic="yes"), TypeError, "class_agnostic"),
    (dict(num_classes=3, add_gt="no"), TypeError, "add_gt"),
    (dict(num_classes=3, sample=1), TypeError, "sample"),
    (dict(num_classes=3, output_gt_index=None), TypeError, "output_gt_index"),
])
def test_bad_arguments_python(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        run(HAND_ROIS, HAND_GT, **kwargs)


def test_bad_inputs_python():
    with pytest.raises(TypeError, match="both"):
        proposal_target(mx.sym.Variable("r"), mx.nd.array(HAND_GT), num_classes=3)
    with pytest.raises(TypeError, match="float32"):
        proposal_target(mx.nd.array(HAND_ROIS, dtype="float64"), mx.nd.array(HAND_GT),
                        num_classes=3)
    with pytest.raises(ValueError, match="not a multiple"):
        proposal_target(mx.nd.array(np.zeros((3, 5))), mx.nd.array(np.zeros((2, 1, 5))),
                        num_classes=3)
    with pytest.raises(ValueError, match="gt_boxes"):
        proposal_target(mx.nd.array(HAND_ROIS), mx.nd.array(HAND_GT[0]), num_classes=3)
    with pytest.raises(ValueError, match="non-empty"):
        proposal_target(mx.nd.array(np.zeros((0, 5))), mx.nd.array(HAND_GT), num_classes=3)


@pytest.mark.parametrize("attrs, match", [
    (dict(num_classes="3", fg_fraction="1.5"), "fg_fraction must be in"),
    (dict(num_classes="1"), "num_classes"),
    (dict(image_rois="4"), "num_classes is required"),
    (dict(num_classes="3", image_rois="0"), "image_rois"),
    (dict(num_classes="3", bg_thresh_lo="0.6", bg_thresh_hi="0.5"), "bg_thresh_lo"),
    (dict(num_classes="3", bbox_stds="(1, 1, 1)"), "bbox_stds"),
    (dict(num_classes="3", bbox_means="(1, 1)"), "bbox_means"),
    (dict(num_classes="3", add_gt="maybe"), "'add_gt' must be a boolean"),
    (dict(num_classes="3", sample="2"), "'sample' must be a boolean"),
    (dict(num_classes="3", output_gt_index="yes"), "'output_gt_index' must be a boolean"),
])
def test_bad_attributes_cpp(attrs, match):
    with pytest.raises(mx.base.MXNetError, match=match):
        out = mx.nd.contrib.ProposalTarget(mx.nd.array(HAND_ROIS), mx.nd.array(HAND_GT),
                                           **attrs)
        mx.nd.waitall()
        del out


def test_bad_shapes_and_classes_cpp():
    rois = mx.sym.Variable("rois")
    gt = mx.sym.Variable("gt_boxes")
    sym = mx.sym.contrib.ProposalTarget(rois, gt, num_classes="3")
    with pytest.raises(mx.base.MXNetError, match="not a multiple"):
        sym.infer_shape(rois=(7, 5), gt_boxes=(2, 3, 5))
    with pytest.raises(mx.base.MXNetError, match="rois must be"):
        sym.infer_shape(rois=(8, 4), gt_boxes=(2, 3, 5))
    with pytest.raises(mx.base.MXNetError, match="zero-size"):
        mx.nd.contrib.ProposalTarget(mx.nd.array(np.zeros((0, 5))), mx.nd.array(HAND_GT),
                                     num_classes="3")
    with pytest.raises(mx.base.MXNetError, match="float32"):
        sym.infer_type(rois="float64", gt_boxes="float64")
    bad_gt = HAND_GT.copy()
    bad_gt[0, 0, 4] = 3  # num_classes = 3: classes 1..2
    with pytest.raises(mx.base.MXNetError, match="class"):
        mx.nd.contrib.ProposalTarget(mx.nd.array(HAND_ROIS), mx.nd.array(bad_gt),
                                     num_classes="3")[1].asnumpy()
    bad_gt[0, 0, 4] = 1.5
    with pytest.raises(mx.base.MXNetError, match="integers"):
        mx.nd.contrib.ProposalTarget(mx.nd.array(HAND_ROIS), mx.nd.array(bad_gt),
                                     num_classes="3")[1].asnumpy()
