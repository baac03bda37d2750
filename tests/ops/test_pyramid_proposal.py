"""Tests of simpledet.ops.pyramid_proposal (mx.sym.contrib.PyramidProposal)."""
import mxnet as mx
import numpy as np
import pytest

from simpledet.core.anchors import grid_anchors
from simpledet.core.boxes import BOX_DELTA_CLIP, clip_boxes, nms
from simpledet.ops.pyramid_proposal import pyramid_proposal

# ---------------------------------------------------------------------------------------------
# NumPy reference


def _decode(anchors, deltas):
    """simpledet.core.boxes.decode_boxes (float32, "+1" convention), with exp evaluated in
    float64 and rounded, as the op does (np.exp on float32 differs from glibc/CUDA by an ulp)."""
    w = anchors[:, 2] - anchors[:, 0] + np.float32(1)
    h = anchors[:, 3] - anchors[:, 1] + np.float32(1)
    cx = anchors[:, 0] + np.float32(0.5) * (w - np.float32(1))
    cy = anchors[:, 1] + np.float32(0.5) * (h - np.float32(1))
    clip = np.float32(BOX_DELTA_CLIP)
    pcx, pcy = deltas[:, 0] * w + cx, deltas[:, 1] * h + cy
    pw = np.exp(np.minimum(deltas[:, 2], clip).astype(np.float64)).astype(np.float32) * w
    ph = np.exp(np.minimum(deltas[:, 3], clip).astype(np.float64)).astype(np.float32) * h
    hw, hh = np.float32(0.5) * (pw - np.float32(1)), np.float32(0.5) * (ph - np.float32(1))
    return np.stack([pcx - hw, pcy - hh, pcx + hw, pcy + hh], axis=1).astype(np.float32)


def reference(cls_probs, bbox_preds, im_info, strides, scales=(8,), ratios=(0.5, 1, 2),
              pre=2000, post=1000, thresh=0.7, min_size=0):
    batch = im_info.shape[0]
    rois = np.zeros((batch * post, 5), np.float32)
    out_scores = np.zeros((batch * post, 1), np.float32)
    for b in range(batch):
        all_boxes, all_scores = [], []
        for stride, cls, box in zip(strides, cls_probs, bbox_preds):
            a, h, w = cls.shape[1:]
            anchors = grid_anchors(stride, scales, ratios, h, w)
            scores = cls[b].transpose(1, 2, 0).reshape(-1)
            deltas = box[b].reshape(a, 4, h, w).transpose(2, 3, 0, 1).reshape(-1, 4)
            boxes = clip_boxes(_decode(anchors, deltas), im_info[b, 0], im_info[b, 1])
            min_px = np.float32(min_size) * np.float32(im_info[b, 2])
            bw = boxes[:, 2] - boxes[:, 0] + 1
            bh = boxes[:, 3] - boxes[:, 1] + 1
            valid = np.nonzero((bw >= min_px) & (bh >= min_px))[0]
            order = valid[np.argsort(-scores[valid], kind="stable")][:pre]
            all_boxes.append(boxes[order])
            all_scores.append(scores[order])
        boxes, scores = np.concatenate(all_boxes), np.concatenate(all_scores)
        keep = nms(boxes, scores, thresh, max_keep=post)
        rows = slice(b * post, (b + 1) * post)
        rois[rows, 0] = b
        if len(keep):
            pick = keep[np.arange(post) % len(keep)]
            rois[rows, 1:] = boxes[pick]
            out_scores[rows, 0] = scores[pick]
    return rois, out_scores


def random_inputs(rng, batch, sizes, num_anchors, delta_scale=0.3):
    cls = [rng.uniform(0, 1, (batch, num_anchors, h, w)).astype(np.float32) for h, w in sizes]
    box = [(rng.standard_normal((batch, 4 * num_anchors, h, w)) * delta_scale).astype(np.float32)
           for h, w in sizes]
    return cls, box


def run(cls, box, im_info, **kwargs):
    rois, scores = pyramid_proposal([mx.nd.array(c) for c in cls], [mx.nd.array(b) for b in box],
                                    mx.nd.array(im_info), **kwargs)
    return rois.asnumpy(), scores.asnumpy()


# ---------------------------------------------------------------------------------------------
# Hand-computed


def tiny_inputs():
    # stride 4, scale 2, ratio 1: one 8x8 anchor per location, [-2, -2, 5, 5] + 4 * (x, y, x, y).
    cls = np.array([0.9, 0.8, 0.7, 0.6], np.float32).reshape(1, 1, 2, 2)
    box = np.zeros((1, 4, 2, 2), np.float32)
    im_info = np.array([[8, 8, 1]], np.float32)
    return cls, box, im_info


def test_tiny_hand_computed():
    cls, box, im_info = tiny_inputs()
    # Clipped to the 8x8 image: (0,0) [0,0,5,5], (0,1) [2,0,7,5], (1,0) [0,2,5,7], (1,1) [2,2,7,7].
    # IoU(box0, box1) = IoU(box0, box2) = 24 / 48 = 0.5; IoU(box0, box3) = 16 / 56.
    kw = dict(feature_strides=(4,), scales=(2,), ratios=(1,), pre_nms_top_n=10, post_nms_top_n=5)
    rois, scores = run([cls], [box], im_info, nms_threshold=0.4, **kw)
    kept = [[0, 0, 0, 5, 5], [0, 2, 2, 7, 7]]
    np.testing.assert_array_equal(rois, np.array(kept + kept + kept[:1], np.float32))
    np.testing.assert_array_equal(scores.ravel(), np.float32([0.9, 0.6, 0.9, 0.6, 0.9]))
    # Threshold 0.5: IoU must exceed it to suppress, so all four survive, by score.
    rois, scores = run([cls], [box], im_info, nms_threshold=0.5, **kw)
    np.testing.assert_array_equal(rois[:4, 1:], [[0, 0, 5, 5], [2, 0, 7, 5], [0, 2, 5, 7],
                                                 [2, 2, 7, 7]])
    np.testing.assert_array_equal(scores.ravel(), np.float32([0.9, 0.8, 0.7, 0.6, 0.9]))
    # A delta: dx = 0.25 moves anchor (0,0) by 0.25 * 8 = 2 pixels: [0, -2, 7, 5] -> clipped
    # [0, 0, 7, 5] (8 x 6). Every clipped box has a side of 6, so min_size 6.5 drops them all.
    box2 = box.copy()
    box2[0, 0, 0, 0] = 0.25
    rois, scores = run([cls], [box2], im_info, nms_threshold=0.5, **kw)
    np.testing.assert_array_equal(rois[0], [0, 0, 0, 7, 5])
    rois, scores = run([cls], [box2], im_info, nms_threshold=0.5, min_size=6.5, **kw)
    np.testing.assert_array_equal(rois, np.zeros((5, 5), np.float32))
    np.testing.assert_array_equal(scores, np.zeros((5, 1), np.float32))
    # im_info scale multiplies min_size: 3.25 * 2 = 6.5 drops everything as well.
    info2 = np.array([[8, 8, 2]], np.float32)
    rois, _ = run([cls], [box2], info2, nms_threshold=0.5, min_size=3.25, **kw)
    np.testing.assert_array_equal(rois, np.zeros((5, 5), np.float32))
    # 3 * 2 = 6: boxes of side 6 survive (the test is "< min_size"). Now IoU(box0, box1) =
    # 36 / 48 = 0.75 suppresses box1; box2 and box3 overlap box0 by 24 / 60 = 0.4 and stay.
    rois, _ = run([cls], [box2], info2, nms_threshold=0.5, min_size=3, **kw)
    np.testing.assert_array_equal(rois[:, 1:], [[0, 0, 7, 5], [0, 2, 5, 7], [2, 2, 7, 7],
                                                [0, 0, 7, 5], [0, 2, 5, 7]])


def test_pre_nms_top_n_is_per_level_and_ties_keep_lower_index():
    cls, box, im_info = tiny_inputs()
    cls[:] = 0.5  # all tied: order must be the anchor order (y, x, a)
    rois, scores = run([cls], [box], im_info, feature_strides=(4,), scales=(2,), ratios=(1,),
                       pre_nms_top_n=3, post_nms_top_n=4, nms_threshold=1.0)
    np.testing.assert_array_equal(rois[:, 1:], [[0, 0, 5, 5], [2, 0, 7, 5], [0, 2, 5, 7],
                                                [0, 0, 5, 5]])
    # Two levels with pre_nms_top_n = 1: one box per level, level 0 first on equal scores.
    cls2 = np.full((1, 1, 1, 1), 0.5, np.float32)
    box2 = np.zeros((1, 4, 1, 1), np.float32)
    rois, _ = run([cls, cls2], [box, box2], im_info, feature_strides=(4, 8), scales=(2,),
                  ratios=(1,), pre_nms_top_n=1, post_nms_top_n=3, nms_threshold=1.0)
    # Level 1 anchor (stride 8, size 16): [-4, -4, 11, 11] -> clipped [0, 0, 7, 7].
    np.testing.assert_array_equal(rois[:, 1:], [[0, 0, 5, 5], [0, 0, 7, 7], [0, 0, 5, 5]])
    # NMS is joint over levels: IoU([0,0,5,5], [0,0,7,7]) = 36 / 64 = 0.5625 > 0.5, so the
    # level-1 box goes (per-level NMS, as in detectron2, would keep it).
    rois, _ = run([cls, cls2], [box, box2], im_info, feature_strides=(4, 8), scales=(2,),
                  ratios=(1,), pre_nms_top_n=1, post_nms_top_n=2, nms_threshold=0.5)
    np.testing.assert_array_equal(rois[:, 1:], [[0, 0, 5, 5], [0, 0, 5, 5]])


# ---------------------------------------------------------------------------------------------
# NumPy reference on random inputs


@pytest.mark.parametrize("thresh,pre,post,min_size", [(0.7, 2000, 300, 0), (0.5, 60, 100, 8),
                                                      (0.3, 20, 50, 0)])
def test_matches_numpy_reference(thresh, pre, post, min_size):
    rng = np.random.default_rng(3)
    sizes = [(12, 10), (6, 5)]
    cls, box = random_inputs(rng, 2, sizes, 3)
    im_info = np.array([[90, 75, 1.0], [70, 80, 1.5]], np.float32)
    kw = dict(scales=(8,), ratios=(0.5, 1, 2), pre_nms_top_n=pre, post_nms_top_n=post,
              nms_threshold=thresh, min_size=min_size)
    rois, scores = run(cls, box, im_info, feature_strides=(8, 16), **kw)
    ref_rois, ref_scores = reference(cls, box, im_info, (8, 16), scales=(8,), ratios=(0.5, 1, 2),
                                     pre=pre, post=post, thresh=thresh, min_size=min_size)
    np.testing.assert_array_equal(rois, ref_rois)
    np.testing.assert_array_equal(scores, ref_scores)
    # The NMS really ran jointly: kept boxes of one image never overlap above the threshold.
    from simpledet.core.boxes import box_iou
    for b in range(2):
        r = ref_rois[b * post:(b + 1) * post, 1:]
        _, first = np.unique(r, axis=0, return_index=True)
        kept = r[np.sort(first)]
        iou = box_iou(kept, kept)
        assert (iou[np.triu_indices(len(kept), 1)] <= np.float32(thresh)).all()


def test_large_deltas_are_clipped_and_multiple_scales():
    rng = np.random.default_rng(5)
    sizes = [(8, 8), (4, 4)]
    cls, box = random_inputs(rng, 1, sizes, 6, delta_scale=3.0)  # exp(dw) would overflow-ish
    im_info = np.array([[64, 64, 1]], np.float32)
    kw = dict(scales=(2, 4), ratios=(0.5, 1, 2), pre_nms_top_n=100, post_nms_top_n=80,
              nms_threshold=0.6)
    rois, scores = run(cls, box, im_info, feature_strides=(8, 16), **kw)
    ref = reference(cls, box, im_info, (8, 16), scales=(2, 4), ratios=(0.5, 1, 2), pre=100,
                    post=80, thresh=0.6)
    np.testing.assert_array_equal(rois, ref[0])
    np.testing.assert_array_equal(scores, ref[1])
    assert rois[:, 1:].min() >= 0 and rois[:, [1, 3]].max() <= 63 and rois[:, [2, 4]].max() <= 63


def test_fpn_five_levels_defaults():
    rng = np.random.default_rng(7)
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    cls, box = random_inputs(rng, 1, sizes, 3)
    im_info = np.array([[64, 64, 1]], np.float32)
    strides = (4, 8, 16, 32, 64)
    rois, scores = run(cls, box, im_info, feature_strides=strides, post_nms_top_n=200)
    ref = reference(cls, box, im_info, strides, post=200)
    np.testing.assert_array_equal(rois, ref[0])
    np.testing.assert_array_equal(scores, ref[1])
    assert rois.shape == (200, 5) and scores.shape == (200, 1)


# ---------------------------------------------------------------------------------------------
# MXNet's MultiProposal (single level)


@pytest.mark.parametrize("pre,post,thresh", [(200, 50, 0.7), (60, 80, 0.5)])
def test_matches_multi_proposal_single_level(pre, post, thresh):
    rng = np.random.default_rng(11)
    batch, a, h, w, stride = 2, 6, 8, 8, 16
    n = a * h * w
    # Distinct scores (MultiProposal's std::sort is not stable).
    fg = np.stack([rng.permutation(n) for _ in range(batch)]).astype(np.float32)
    fg = ((fg + 1) / (n + 1)).reshape(batch, a, h, w).astype(np.float32)
    box = (rng.standard_normal((batch, 4 * a, h, w)) * 0.2).astype(np.float32)
    # im_info covers the whole map (MultiProposal ignores anchors beyond im_size / stride).
    im_info = np.array([[128, 128, 1], [128, 128, 1]], np.float32)
    kw = dict(scales=(2, 4), ratios=(0.5, 1, 2))
    rois, scores = run([fg], [box], im_info, feature_strides=(stride,), pre_nms_top_n=pre,
                       post_nms_top_n=post, nms_threshold=thresh, min_size=0, **kw)
    cls_prob = mx.nd.array(np.concatenate([1 - fg, fg], axis=1))
    mx_rois, mx_scores = mx.nd.contrib.MultiProposal(
        cls_prob, mx.nd.array(box), mx.nd.array(im_info), rpn_pre_nms_top_n=pre,
        rpn_post_nms_top_n=post, threshold=thresh, rpn_min_size=0, feature_stride=stride,
        output_score=True, **kw)
    # Same rows, padding included (both repeat kept box j % K); coordinates differ only by
    # the float rounding of exp / MXNet's double-precision centre arithmetic.
    np.testing.assert_allclose(rois, mx_rois.asnumpy(), rtol=0, atol=1e-3)
    np.testing.assert_array_equal(scores, mx_scores.asnumpy())
    if post > pre:  # the padding regime really was exercised (scores are distinct)
        assert len(np.unique(scores[:post])) < post


# ---------------------------------------------------------------------------------------------
# Padding, batches


def test_all_boxes_under_min_size_give_zero_rows():
    rng = np.random.default_rng(2)
    cls, box = random_inputs(rng, 2, [(4, 4), (2, 2)], 3)
    im_info = np.array([[32, 32, 1], [32, 32, 1]], np.float32)
    rois, scores = run(cls, box, im_info, feature_strides=(8, 16), min_size=40,
                       post_nms_top_n=7)
    expected = np.zeros((14, 5), np.float32)
    expected[7:, 0] = 1
    np.testing.assert_array_equal(rois, expected)
    np.testing.assert_array_equal(scores, np.zeros((14, 1), np.float32))


def test_one_survivor_repeats():
    rng = np.random.default_rng(4)
    cls, box = random_inputs(rng, 1, [(4, 4)], 1)
    im_info = np.array([[32, 32, 1]], np.float32)
    # nms_threshold 0: any overlap suppresses; all boxes cover the image centre region.
    box[0][:] = 0
    rois, scores = run(cls, box, im_info, feature_strides=(8,), scales=(4,), ratios=(1,),
                       nms_threshold=0.0, post_nms_top_n=4)
    # Every pair of the 32x32 anchors on this 4x4 map overlaps: one survivor, repeated.
    assert len(np.unique(rois, axis=0)) == 1
    ref = reference(cls, box, im_info, (8,), scales=(4,), ratios=(1,), post=4, thresh=0.0)
    np.testing.assert_array_equal(rois, ref[0])
    np.testing.assert_array_equal(scores, ref[1])
    assert scores[0, 0] == cls[0].max()


def test_batch_two_different_im_info_matches_single_images():
    rng = np.random.default_rng(9)
    sizes = [(10, 10), (5, 5)]
    cls, box = random_inputs(rng, 2, sizes, 3)
    im_info = np.array([[80, 60, 1.0], [40, 70, 2.0]], np.float32)
    kw = dict(feature_strides=(8, 16), pre_nms_top_n=50, post_nms_top_n=40, min_size=4,
              nms_threshold=0.6)
    rois, scores = run(cls, box, im_info, **kw)
    for b in range(2):
        one_rois, one_scores = run([c[b:b + 1] for c in cls], [x[b:b + 1] for x in box],
                                   im_info[b:b + 1], **kw)
        rows = slice(b * 40, (b + 1) * 40)
        np.testing.assert_array_equal(rois[rows, 0], b)
        np.testing.assert_array_equal(rois[rows, 1:], one_rois[:, 1:])
        np.testing.assert_array_equal(scores[rows], one_scores)
        h, w = im_info[b, :2]
        assert rois[rows, [3]].max() <= w - 1 and rois[rows, [4]].max() <= h - 1
    ref = reference(cls, box, im_info, (8, 16), pre=50, post=40, thresh=0.6, min_size=4)
    np.testing.assert_array_equal(rois, ref[0])
    assert not np.array_equal(rois[:40, 1:], rois[40:, 1:])


# ---------------------------------------------------------------------------------------------
# Symbolic graph


def test_module_forward_backward_zero_gradient():
    data = mx.sym.var("data")
    im_info = mx.sym.var("im_info")
    feat0 = mx.sym.Convolution(data, num_filter=4, kernel=(3, 3), pad=(1, 1), name="conv")
    feat1 = mx.sym.Pooling(feat0, kernel=(2, 2), stride=(2, 2), pool_type="max")
    cls = [mx.sym.sigmoid(mx.sym.Convolution(f, num_filter=3, kernel=(1, 1), name=f"cls{i}"))
           for i, f in enumerate([feat0, feat1])]
    box = [mx.sym.Convolution(f, num_filter=12, kernel=(1, 1), name=f"box{i}")
           for i, f in enumerate([feat0, feat1])]
    rois, scores = pyramid_proposal(cls, box, im_info, feature_strides=(8, 16),
                                    pre_nms_top_n=30, post_nms_top_n=20, name="proposal")
    loss = mx.sym.MakeLoss(mx.sym.sum(scores) + mx.sym.sum(rois))
    _, out_shapes, _ = mx.sym.Group([rois, scores]).infer_shape(data=(2, 3, 8, 8),
                                                                 im_info=(2, 3))
    assert out_shapes == [(40, 5), (40, 1)]

    mod = mx.mod.Module(loss, data_names=["data", "im_info"], label_names=None,
                        context=mx.cpu())
    mod.bind(data_shapes=[("data", (2, 3, 8, 8)), ("im_info", (2, 3))], for_training=True)
    mod.init_params(mx.init.Normal(0.1))
    batch = mx.io.DataBatch([mx.nd.random.uniform(shape=(2, 3, 8, 8)),
                             mx.nd.array([[64, 64, 1], [48, 56, 1]])])
    mod.forward(batch, is_train=True)
    mod.backward()
    assert np.isfinite(mod.get_outputs()[0].asnumpy()).all()
    grads = mod._exec_group.grad_arrays
    names = mod._exec_group.param_names
    assert "conv_weight" in names
    for name, grad in zip(names, grads):
        assert np.abs(grad[0].asnumpy()).max() == 0, name

    # simple_bind + executor outputs equal the imperative op on the same features.
    exe = mx.sym.Group([rois, scores, *cls, *box]).simple_bind(
        mx.cpu(), data=(2, 3, 8, 8), im_info=(2, 3), grad_req="null")
    for name, arr in exe.arg_dict.items():
        arr[:] = mod.get_params()[0][name] if name in mod.get_params()[0] else batch.data[
            ["data", "im_info"].index(name)]
    outs = exe.forward(is_train=False)
    ref_rois, ref_scores = run([o.asnumpy() for o in outs[2:4]], [o.asnumpy() for o in outs[4:]],
                               batch.data[1].asnumpy(), feature_strides=(8, 16),
                               pre_nms_top_n=30, post_nms_top_n=20)
    np.testing.assert_array_equal(outs[0].asnumpy(), ref_rois)
    np.testing.assert_array_equal(outs[1].asnumpy(), ref_scores)


# ---------------------------------------------------------------------------------------------
# Errors


def _nd_inputs():
    cls, box, im_info = tiny_inputs()
    return [mx.nd.array(cls)], [mx.nd.array(box)], mx.nd.array(im_info)


TINY = dict(feature_strides=(4,), scales=(2,), ratios=(1,))


def test_mismatched_level_counts():
    cls, box, im_info = _nd_inputs()
    with pytest.raises(ValueError, match="one cls_prob and one bbox_pred per level"):
        pyramid_proposal(cls + cls, box, im_info, feature_strides=(4, 8), scales=(2,),
                         ratios=(1,))
    with pytest.raises(ValueError, match="len\\(feature_strides\\) = 2"):
        pyramid_proposal(cls, box, im_info, feature_strides=(4, 8), scales=(2,), ratios=(1,))
    with pytest.raises(TypeError, match="cls_probs must be a list"):
        pyramid_proposal(cls[0], box, im_info, **TINY)


def test_wrong_number_of_anchors():
    cls, box, im_info = _nd_inputs()
    with pytest.raises(ValueError, match="A = len\\(ratios\\) \\* len\\(scales\\) = 3"):
        pyramid_proposal(cls, box, im_info, feature_strides=(4,), scales=(2,))
    bad_box = [mx.nd.zeros((1, 8, 2, 2))]
    with pytest.raises(ValueError, match="bbox_preds\\[0\\] must be \\(B, 4A, H, W\\)"):
        pyramid_proposal(cls, bad_box, im_info, **TINY)
    with pytest.raises(ValueError, match="im_info must be"):
        pyramid_proposal(cls, box, mx.nd.zeros((2, 3)), **TINY)
    # Symbolic: the C++ shape inference names the problem.
    rois, _ = pyramid_proposal([mx.sym.var("c")], [mx.sym.var("b")], mx.sym.var("i"),
                               feature_strides=(4,))
    with pytest.raises(mx.base.MXNetError, match="A = len\\(ratios\\) \\* len\\(scales\\) = 3"):
        rois.infer_shape(c=(1, 1, 2, 2), b=(1, 4, 2, 2), i=(1, 3))


def test_float16_rejected():
    cls, box, im_info = _nd_inputs()
    with pytest.raises(TypeError, match="cls_probs\\[0\\] must be float32, got float16"):
        pyramid_proposal([cls[0].astype("float16")], box, im_info, **TINY)
    with pytest.raises(TypeError, match="im_info must be float32"):
        pyramid_proposal(cls, box, im_info.astype("float64"), **TINY)
    rois, _ = pyramid_proposal([mx.sym.var("c")], [mx.sym.var("b")], mx.sym.var("i"), **TINY)
    # (simple_bind re-raises MXNet's error as RuntimeError)
    with pytest.raises((mx.base.MXNetError, RuntimeError),
                       match="cls_prob_0 is float16, but all inputs must be float32"):
        rois.simple_bind(mx.cpu(), c=(1, 1, 2, 2), b=(1, 4, 2, 2), i=(1, 3),
                         type_dict={"c": "float16"}, grad_req="null")


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(feature_strides=(8, 4)), ValueError, "strictly ascending"),
    (dict(feature_strides=()), ValueError, "must not be empty"),
    (dict(feature_strides=(4,), scales=(0,)), ValueError, "scales must hold positive"),
    (dict(feature_strides=(4,), ratios="1"), TypeError, "ratios must be a list"),
    (dict(feature_strides=(4,), pre_nms_top_n=0), ValueError, "pre_nms_top_n must be a pos"),
    (dict(feature_strides=(4,), post_nms_top_n=2.5), TypeError, "post_nms_top_n must be an int"),
    (dict(feature_strides=(4,), nms_threshold=1.5), ValueError, "nms_threshold must be in"),
    (dict(feature_strides=(4,), min_size=-1), ValueError, "min_size must be >= 0"),
])
def test_bad_arguments(kwargs, exc, match):
    cls, box, im_info = _nd_inputs()
    kwargs = {"scales": (2,), "ratios": (1,), **kwargs}
    with pytest.raises(exc, match=match):
        pyramid_proposal(cls, box, im_info, **kwargs)


def test_mixed_input_types_and_cpp_attr_errors():
    cls, box, im_info = _nd_inputs()
    with pytest.raises(TypeError, match="all mx.sym.Symbol or all"):
        pyramid_proposal([mx.sym.var("c")], box, im_info, **TINY)
    # The C++ attribute checks (reached when the op is called directly).
    with pytest.raises(mx.base.MXNetError, match="feature_strides must be strictly ascending"):
        mx.nd.contrib.PyramidProposal(cls[0], cls[0], box[0], box[0], im_info,
                                      feature_strides="(8, 4)")
    with pytest.raises(mx.base.MXNetError, match="nms_threshold must be in"):
        mx.nd.contrib.PyramidProposal(cls[0], box[0], im_info, feature_strides="(4,)",
                                      scales="(2,)", ratios="(1,)", nms_threshold="2")
