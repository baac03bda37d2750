"""Tests of simpledet.ops.detection_postprocess (_contrib_DetectionPostprocess), CPU only.

Note on exactness: the op decodes with the C library's expf, while NumPy 1.23 evaluates
float32 np.exp with its own SIMD code (AVX2/AVX512F), which differs from expf by 1-2 ulp on a
large share of inputs. Comparisons against the NumPy reference are therefore bit-exact when the
de-normalized dw/dh are 0 (exp(0) == 1 everywhere) and, with random dw/dh, exact on the kept
classes/scores and within 1e-3 px on the coordinates.
"""
import mxnet as mx
import numpy as np
import pytest

from simpledet.core.boxes import box_iou, clip_boxes, decode_boxes, nms
from simpledet.ops.detection_postprocess import detection_postprocess

STDS = (0.1, 0.1, 0.2, 0.2)


def reference(rois, cls_prob, bbox_pred, im_info, bbox_means=(0., 0., 0., 0.), bbox_stds=STDS,
              score_thresh=0.05, nms_threshold=0.5, max_det=100, class_agnostic=False):
    """NumPy reference built on simpledet.core.boxes: (B, max_det, 6)."""
    batch = im_info.shape[0]
    num_rois = rois.shape[0] // batch
    num_classes = cls_prob.shape[1]
    out = np.full((batch, max_det, 6), -1, np.float32)
    for b in range(batch):
        rows = np.arange(b * num_rois, (b + 1) * num_rois)
        height, width = im_info[b, 0], im_info[b, 1]
        dets = []
        for c in range(1, num_classes):
            scores = cls_prob[rows, c]
            sel = rows[scores > score_thresh]
            if len(sel) == 0:
                continue
            deltas = bbox_pred[sel, 0:4] if class_agnostic else bbox_pred[sel, 4 * c:4 * c + 4]
            boxes = decode_boxes(rois[sel, 1:5], deltas, bbox_means, bbox_stds)
            boxes = clip_boxes(boxes, height, width)
            for k in nms(boxes, cls_prob[sel, c], nms_threshold):
                dets.append([*boxes[k], cls_prob[sel[k], c], c])
        if dets:
            dets = np.asarray(dets, np.float32)
            order = np.argsort(-dets[:, 4], kind="stable")[:max_det]
            out[b, :len(order)] = dets[order]
    return out


def run(rois, cls_prob, bbox_pred, im_info, **kwargs):
    nd = [mx.nd.array(x, dtype=np.float32) for x in (rois, cls_prob, bbox_pred, im_info)]
    return detection_postprocess(*nd, **kwargs).asnumpy()


def random_case(rng, batch=2, groups=6, per_group=8, num_classes=5, class_agnostic=False,
                zero_wh=False, delta_scale=1.0, quantize=False):
    """Rois in `groups` clusters per image (heavy overlap inside, none across), probabilities
    with real foreground mass, random deltas. quantize=True rounds scores to k/32 (ties)."""
    num_rois = groups * per_group
    # Image 1 is smaller than the cluster layout: its right/bottom clusters get clipped.
    im_info = np.array([[420, 620, 1.0], [340, 540, 1.5]][:batch], np.float32)
    rois = np.zeros((batch * num_rois, 5), np.float32)
    for b in range(batch):
        for g in range(groups):
            cx, cy = 100 + 200 * (g % 3), 100 + 200 * (g // 3)
            size = rng.uniform(70, 110, size=2)
            for k in range(per_group):
                jit = rng.uniform(-2, 2, size=4)
                i = b * num_rois + g * per_group + k
                rois[i] = [b, cx - size[0] / 2 + jit[0], cy - size[1] / 2 + jit[1],
                           cx + size[0] / 2 + jit[2], cy + size[1] / 2 + jit[3]]
    logits = rng.normal(0, 2, size=(batch * num_rois, num_classes)).astype(np.float32)
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    if quantize:
        prob = np.round(prob * 32) / 32
    prob = prob.astype(np.float32)
    width = 4 if class_agnostic else 4 * num_classes
    bbox_pred = (rng.uniform(-1, 1, size=(batch * num_rois, width)) * delta_scale)
    bbox_pred = bbox_pred.astype(np.float32)
    if zero_wh:
        bbox_pred[:, 2::4] = 0
        bbox_pred[:, 3::4] = 0
    return rois, prob, bbox_pred, im_info


def assert_dets_close(got, want):
    """Same kept (class, score) sequence, coordinates within 1e-3 px (expf vs NumPy exp)."""
    assert got.shape == want.shape
    np.testing.assert_array_equal(got[..., 4:], want[..., 4:])
    np.testing.assert_allclose(got[..., :4], want[..., :4], rtol=0, atol=1e-3)


# ---------------------------------------------------------------------------------------------
# Hand-computed cases


def tiny_inputs():
    # roi0: w=40, h=20, centre (29.5, 19.5); class-1 dx = 1.0 * 0.1 -> shift +4 px.
    rois = np.array([[0, 10, 10, 49, 29],
                     [0, 12, 10, 51, 29],
                     [0, 60, 40, 119, 99],   # clipped to the 100 x 80 image
                     [0, 0, 0, 9, 9]], np.float32)
    cls_prob = np.array([[0.28, 0.70, 0.02],
                         [0.38, 0.60, 0.02],
                         [0.20, 0.30, 0.50],
                         [0.91, 0.04, 0.05]], np.float32)  # 0.05 is not > score_thresh
    bbox_pred = np.zeros((4, 12), np.float32)
    bbox_pred[0, 4] = 1.0
    im_info = np.array([[80, 100, 1.0]], np.float32)
    return rois, cls_prob, bbox_pred, im_info


def test_hand_computed_tiny_case():
    dets = run(*tiny_inputs(), max_det=5)
    # class 1: roi0 -> [14, 10, 53, 29] (0.7); roi1 [12, 10, 51, 29] has IoU 760/840 with it
    # and is suppressed; roi2 -> clipped [60, 40, 99, 79] (0.3). class 2: roi2 (0.5).
    want = np.array([[14, 10, 53, 29, 0.7, 1],
                     [60, 40, 99, 79, 0.5, 2],
                     [60, 40, 99, 79, 0.3, 1],
                     [-1] * 6,
                     [-1] * 6], np.float32)
    np.testing.assert_array_equal(dets, want[None])
    np.testing.assert_array_equal(dets, reference(*tiny_inputs(), max_det=5))


def test_hand_computed_nms_threshold_and_means():
    rois, cls_prob, bbox_pred, im_info = tiny_inputs()
    # IoU(roi0, roi1) = 0.905: a threshold of 0.95 keeps both.
    dets = run(rois, cls_prob, bbox_pred, im_info, nms_threshold=0.95, max_det=4)
    np.testing.assert_array_equal(dets[0, :, 4], np.float32([0.7, 0.6, 0.5, 0.3]))
    np.testing.assert_array_equal(dets[0, 1, :4], [12, 10, 51, 29])
    # bbox_means add to every de-normalized delta: dy mean 0.5 shifts class-2 roi2 by 30 px.
    dets = run(rois, cls_prob, bbox_pred, im_info, bbox_means=(0, 0.5, 0, 0), max_det=3)
    np.testing.assert_array_equal(dets[0, 1], [60, 70, 99, 79, 0.5, 2])


def test_ties_keep_lower_class_then_lower_roi():
    rois = np.array([[0, 0, 0, 19, 19], [0, 1, 0, 20, 19], [0, 50, 50, 69, 69]], np.float32)
    cls_prob = np.array([[0.2, 0.4, 0.4], [0.2, 0.4, 0.4], [0.2, 0.4, 0.4]], np.float32)
    bbox_pred = np.zeros((3, 12), np.float32)
    im_info = np.array([[100, 100, 1]], np.float32)
    dets = run(rois, cls_prob, bbox_pred, im_info, max_det=6)
    # Per class roi0 wins over its tied overlapping twin roi1; roi2 survives; class 1 first.
    want = np.array([[0, 0, 19, 19, 0.4, 1], [50, 50, 69, 69, 0.4, 1],
                     [0, 0, 19, 19, 0.4, 2], [50, 50, 69, 69, 0.4, 2]], np.float32)
    np.testing.assert_array_equal(dets[0, :4], want)
    assert (dets[0, 4:] == -1).all()


def test_dw_dh_clip():
    rois = np.array([[0, 1000, 100, 1009, 119]], np.float32)  # w = 10, h = 20
    cls_prob = np.array([[0.1, 0.9]], np.float32)
    bbox_pred = np.array([[0, 0, 0, 0, 0, 0, 1e3, -1]], np.float32)
    im_info = np.array([[5000, 5000, 1]], np.float32)
    dets = run(rois, cls_prob, bbox_pred, im_info, max_det=1)
    w = 10 * 1000 / 16  # dw clipped at log(1000 / 16)
    h = 20 * np.exp(-0.2)
    want = [1004.5 - (w - 1) / 2, 109.5 - (h - 1) / 2, 1004.5 + (w - 1) / 2,
            109.5 + (h - 1) / 2]
    np.testing.assert_allclose(dets[0, 0, :4], want, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# NumPy reference on random inputs


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_numpy_reference_exactly(seed):
    rng = np.random.RandomState(seed)
    inputs = random_case(rng, zero_wh=True, quantize=(seed == 1))
    kwargs = dict(bbox_means=(0.01, -0.02, 0.0, 0.0), bbox_stds=(0.1, 0.2, 0.2, 0.2),
                  score_thresh=0.05, nms_threshold=0.5, max_det=100)
    got = run(*inputs, **kwargs)
    want = reference(*inputs, **kwargs)
    assert (want[..., 5] > 0).sum(axis=1).min() > 10  # a non-trivial number of detections
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("nms_threshold", [0.3, 0.7])
def test_matches_numpy_reference_random_deltas(nms_threshold):
    rng = np.random.RandomState(7)
    inputs = random_case(rng, delta_scale=3.0)
    kwargs = dict(bbox_means=(0.0, 0.0, 0.05, -0.05), score_thresh=0.1,
                  nms_threshold=nms_threshold, max_det=60)
    got = run(*inputs, **kwargs)
    want = reference(*inputs, **kwargs)
    assert (want[..., 5] > 0).sum() > 20
    assert_dets_close(got, want)


def test_max_det_truncation():
    rng = np.random.RandomState(3)
    inputs = random_case(rng, zero_wh=True, quantize=True)
    full = run(*inputs, nms_threshold=0.9, max_det=200)
    counts = (full[..., 5] > 0).sum(axis=1)
    assert counts.min() > 8
    short = run(*inputs, nms_threshold=0.9, max_det=8)
    assert short.shape == (2, 8, 6)
    np.testing.assert_array_equal(short, full[:, :8])
    np.testing.assert_array_equal(short, reference(*inputs, nms_threshold=0.9, max_det=8))
    assert (short[..., 5] > 0).all()


def test_no_candidate_above_threshold_gives_all_minus_one():
    rng = np.random.RandomState(4)
    rois, cls_prob, bbox_pred, im_info = random_case(rng)
    dets = run(rois, cls_prob, bbox_pred, im_info, score_thresh=1.0, max_det=7)
    np.testing.assert_array_equal(dets, -np.ones((2, 7, 6), np.float32))
    # Only one image has candidates: the other is all -1.
    cls_prob = cls_prob.copy()
    cls_prob[:len(rois) // 2, 1:] = 0.01
    dets = run(rois, cls_prob, bbox_pred, im_info)
    assert (dets[0] == -1).all()
    assert (dets[1, :, 5] > 0).sum() > 10
    assert_dets_close(dets, reference(rois, cls_prob, bbox_pred, im_info))


def test_class_agnostic():
    rng = np.random.RandomState(5)
    rois, cls_prob, bbox4, im_info = random_case(rng, class_agnostic=True, zero_wh=True)
    got = run(rois, cls_prob, bbox4, im_info, class_agnostic=True)
    np.testing.assert_array_equal(
        got, reference(rois, cls_prob, bbox4, im_info, class_agnostic=True))
    # With random dw/dh: equal to the class-specific op fed the same deltas for every class.
    rois, cls_prob, bbox4, im_info = random_case(rng, class_agnostic=True)
    got = run(rois, cls_prob, bbox4, im_info, class_agnostic=True)
    tiled = np.tile(bbox4, (1, cls_prob.shape[1]))
    np.testing.assert_array_equal(got, run(rois, cls_prob, tiled, im_info))
    assert_dets_close(got, reference(rois, cls_prob, bbox4, im_info, class_agnostic=True))


# ---------------------------------------------------------------------------------------------
# MXNet's box_nms


def test_matches_mxnet_box_nms():
    """Class-aware box_nms over all decoded (roi, class) pairs keeps the same detections.

    box_nms computes IoU without the +1 (area = w * h), this op with it. The rois form
    clusters that overlap heavily inside (IoU > 0.7) and not at all across (IoU 0) under both
    conventions, asserted below, so both NMS make the same decisions at threshold 0.5.
    """
    rng = np.random.RandomState(11)
    rois, cls_prob, bbox_pred, im_info = random_case(rng, num_classes=4, delta_scale=0.3)
    batch, num_classes = im_info.shape[0], cls_prob.shape[1]
    num_rois = rois.shape[0] // batch
    score_thresh, nms_threshold, max_det = 0.05, 0.5, 100
    got = run(rois, cls_prob, bbox_pred, im_info, score_thresh=score_thresh,
              nms_threshold=nms_threshold, max_det=max_det)
    data = np.zeros((batch, num_rois * (num_classes - 1), 6), np.float32)
    for b in range(batch):
        rows = np.arange(b * num_rois, (b + 1) * num_rois)
        for c in range(1, num_classes):
            boxes = clip_boxes(decode_boxes(rois[rows, 1:5], bbox_pred[rows, 4 * c:4 * c + 4],
                                            stds=STDS), im_info[b, 0], im_info[b, 1])
            block = data[b, (c - 1) * num_rois:c * num_rois]
            block[:, 0], block[:, 1], block[:, 2:] = c, cls_prob[rows, c], boxes
            # The construction keeps IoUs far from the threshold in both conventions.
            off = ~np.eye(len(boxes), dtype=bool)
            for plus_one in (True, False):
                iou = _iou(boxes, plus_one)[off]
                assert ((iou == 0) | (iou > 0.7)).all()
            np.testing.assert_allclose(_iou(boxes, True), box_iou(boxes, boxes), rtol=1e-6)
    out = mx.nd.contrib.box_nms(mx.nd.array(data), overlap_thresh=nms_threshold,
                                valid_thresh=score_thresh, topk=-1, coord_start=2,
                                score_index=1, id_index=0, force_suppress=False,
                                in_format="corner", out_format="corner").asnumpy()
    for b in range(batch):
        kept = out[b][out[b, :, 1] > 0][:max_det]
        assert len(kept) > 10
        n = len(kept)
        assert (got[b, n:] == -1).all()
        np.testing.assert_array_equal(got[b, :n, 5], kept[:, 0])  # classes
        np.testing.assert_array_equal(got[b, :n, 4], kept[:, 1])  # scores
        np.testing.assert_allclose(got[b, :n, :4], kept[:, 2:], rtol=0, atol=1e-3)


def _iou(boxes, plus_one):
    one = 1.0 if plus_one else 0.0
    iw = np.minimum(boxes[:, None, 2], boxes[None, :, 2]) - np.maximum(
        boxes[:, None, 0], boxes[None, :, 0]) + one
    ih = np.minimum(boxes[:, None, 3], boxes[None, :, 3]) - np.maximum(
        boxes[:, None, 1], boxes[None, :, 1]) + one
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area = (boxes[:, 2] - boxes[:, 0] + one) * (boxes[:, 3] - boxes[:, 1] + one)
    return inter / (area[:, None] + area[None, :] - inter)


# ---------------------------------------------------------------------------------------------
# Symbolic graph


def test_module_forward_backward():
    rng = np.random.RandomState(6)
    rois, cls_prob, bbox_pred, im_info = random_case(rng, zero_wh=True)
    names = ["rois", "cls_prob", "bbox_pred", "im_info"]
    syms = [mx.sym.var(n) for n in names]
    dets = detection_postprocess(*syms, max_det=20, name="post")
    assert dets.list_arguments() == names
    _, out_shapes, _ = dets.infer_shape(rois=rois.shape, cls_prob=cls_prob.shape,
                                        bbox_pred=bbox_pred.shape, im_info=im_info.shape)
    assert out_shapes == [(2, 20, 6)]
    # A training graph: a loss on top of the detections, plus the detections themselves.
    loss = mx.sym.make_loss(mx.sym.sum(dets))
    net = mx.sym.Group([loss, mx.sym.BlockGrad(dets)])
    mod = mx.mod.Module(net, data_names=names, label_names=None, context=mx.cpu())
    # im_info has B rows, the others B * R: its layout has no 'N' so Module does not require
    # a common batch size for it.
    shapes = [mx.io.DataDesc(n, x.shape, layout="NC" if n != "im_info" else "BC")
              for n, x in zip(names, (rois, cls_prob, bbox_pred, im_info))]
    mod.bind(data_shapes=shapes, for_training=True, inputs_need_grad=True)
    mod.init_params()
    batch = mx.io.DataBatch([mx.nd.array(x) for x in (rois, cls_prob, bbox_pred, im_info)])
    mod.forward(batch, is_train=True)
    out = mod.get_outputs()[1].asnumpy()
    np.testing.assert_array_equal(out, reference(rois, cls_prob, bbox_pred, im_info, max_det=20))
    mod.backward()
    grads = [g.asnumpy() for g in mod.get_input_grads()]
    assert [g.shape for g in grads] == [rois.shape, cls_prob.shape, bbox_pred.shape,
                                        im_info.shape]
    assert all((g == 0).all() for g in grads)


def test_simple_bind_backward_overwrites_with_zeros():
    rng = np.random.RandomState(8)
    inputs = random_case(rng, batch=1, groups=2, per_group=3, num_classes=3, zero_wh=True)
    names = ["rois", "cls_prob", "bbox_pred", "im_info"]
    dets = detection_postprocess(*[mx.sym.var(n) for n in names], max_det=5)
    exe = dets.simple_bind(mx.cpu(), **{n: x.shape for n, x in zip(names, inputs)})
    for n, x in zip(names, inputs):
        exe.arg_dict[n][:] = x
        exe.grad_dict[n][:] = 7.0
    exe.forward(is_train=True)
    exe.backward([mx.nd.ones((1, 5, 6))])
    np.testing.assert_array_equal(exe.outputs[0].asnumpy(), reference(*inputs, max_det=5))
    for n in names:
        assert (exe.grad_dict[n].asnumpy() == 0).all()


# ---------------------------------------------------------------------------------------------
# Bad arguments


def nd_inputs(num_classes=3, rows=4, batch=1, agnostic=False):
    return (mx.nd.zeros((rows, 5)), mx.nd.zeros((rows, num_classes)),
            mx.nd.zeros((rows, 4 if agnostic else 4 * num_classes)), mx.nd.ones((batch, 3)))


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(bbox_means=(0, 0, 0)), ValueError, "bbox_means must have 4"),
    (dict(bbox_stds=0.1), TypeError, "bbox_stds must be a sequence"),
    (dict(bbox_stds=(0.1, 0.1, "a", 0.2)), TypeError, r"bbox_stds\[2\] must be a number"),
    (dict(score_thresh=float("nan")), ValueError, "score_thresh must be finite"),
    (dict(nms_threshold=1.5), ValueError, r"nms_threshold must be in \[0, 1\]"),
    (dict(max_det=0), ValueError, "max_det must be positive"),
    (dict(max_det=2.5), TypeError, "max_det must be an int"),
    (dict(class_agnostic="yes"), TypeError, "class_agnostic must be a bool"),
])
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        detection_postprocess(*nd_inputs(), **kwargs)


def test_bad_inputs():
    rois, cls_prob, bbox_pred, im_info = nd_inputs()
    with pytest.raises(TypeError, match="must all be mx.sym.Symbol or all mx.nd.NDArray"):
        detection_postprocess(rois.asnumpy(), cls_prob, bbox_pred, im_info)
    with pytest.raises(TypeError, match="cls_prob must be float32, got float64"):
        detection_postprocess(rois, cls_prob.astype("float64"), bbox_pred, im_info)
    with pytest.raises(ValueError, match="rois must be"):
        detection_postprocess(mx.nd.zeros((4, 4)), cls_prob, bbox_pred, im_info)
    with pytest.raises(ValueError, match="not a multiple of the batch size 3"):
        detection_postprocess(rois, cls_prob, bbox_pred, mx.nd.ones((3, 3)))
    with pytest.raises(ValueError, match="cls_prob must be"):
        detection_postprocess(rois, mx.nd.zeros((4, 1)), mx.nd.zeros((4, 4)), im_info)
    with pytest.raises(ValueError, match=r"bbox_pred must be \(4, 12\)"):
        detection_postprocess(rois, cls_prob, mx.nd.zeros((4, 4)), im_info)
    with pytest.raises(ValueError, match=r"bbox_pred must be \(4, 4\) \(class_agnostic"):
        detection_postprocess(rois, cls_prob, bbox_pred, im_info, class_agnostic=True)
    with pytest.raises(ValueError, match="im_info must be"):
        detection_postprocess(rois, cls_prob, bbox_pred, mx.nd.ones((1, 4)))


def test_symbolic_shape_and_type_errors_are_clear():
    names = ["rois", "cls_prob", "bbox_pred", "im_info"]
    dets = detection_postprocess(*[mx.sym.var(n) for n in names])
    with pytest.raises(mx.base.MXNetError, match="bbox_pred must be"):
        dets.infer_shape(rois=(4, 5), cls_prob=(4, 3), bbox_pred=(4, 8), im_info=(1, 3))
    with pytest.raises(mx.base.MXNetError, match="not a multiple of the batch size"):
        dets.infer_shape(rois=(5, 5), cls_prob=(5, 3), bbox_pred=(5, 12), im_info=(2, 3))
    with pytest.raises(mx.base.MXNetError, match="rois must be float32, got float64"):
        dets.infer_type(rois="float64", cls_prob="float32", bbox_pred="float32",
                        im_info="float32")
    with pytest.raises(mx.base.MXNetError, match="max_det must be a positive integer"):
        mx.sym.contrib.DetectionPostprocess(*[mx.sym.var(n) for n in names], max_det="0")
