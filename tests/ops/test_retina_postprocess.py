"""Tests of simpledet.ops.retina_postprocess (_contrib_RetinaPostprocess), CPU: hand-computed
cases, a NumPy reference (anchors, decode, threshold, per-level top-k, class-aware NMS across
levels) on random multi-level inputs with ties, empty outputs, portrait maps and clipping, and
the op inside a Module graph."""
import mxnet as mx
import numpy as np
import pytest

from simpledet.core.anchors import grid_anchors
from simpledet.core.boxes import BOX_DELTA_CLIP, clip_boxes, nms
from simpledet.ops.retina_postprocess import RETINA_SCALES, retina_postprocess

RATIOS = (0.5, 1, 2)
F32 = np.float32


# ---------------------------------------------------------------- NumPy reference
def _decode(anchors, deltas):
    """decode_boxes ("+1" convention, float32) with exp evaluated in float64 and rounded, as
    the op does (np.exp on float32 differs from glibc/CUDA by an ulp)."""
    one, half = np.float32(1), np.float32(0.5)
    w, h = anchors[:, 2] - anchors[:, 0] + one, anchors[:, 3] - anchors[:, 1] + one
    cx, cy = anchors[:, 0] + half * (w - one), anchors[:, 1] + half * (h - one)
    clip = np.float32(BOX_DELTA_CLIP)
    pcx, pcy = deltas[:, 0] * w + cx, deltas[:, 1] * h + cy
    pw = np.exp(np.minimum(deltas[:, 2], clip).astype(np.float64)).astype(np.float32) * w
    ph = np.exp(np.minimum(deltas[:, 3], clip).astype(np.float64)).astype(np.float32) * h
    hw, hh = half * (pw - one), half * (ph - one)
    return np.stack([pcx - hw, pcy - hh, pcx + hw, pcy + hh], axis=1).astype(np.float32)


def reference(cls_probs, bbox_deltas, im_info, feature_strides, scales=RETINA_SCALES,
              ratios=RATIOS, bbox_means=(0, 0, 0, 0), bbox_stds=(1, 1, 1, 1), score_thresh=0.05,
              pre_nms_top_n=1000, nms_threshold=0.5, max_det=100):
    num_anchors = len(scales) * len(ratios)
    means, stds = np.float32(bbox_means), np.float32(bbox_stds)
    batch = im_info.shape[0]
    out = np.full((batch, max_det, 6), -1, np.float32)
    for b in range(batch):
        boxes, scores, classes = [], [], []
        for stride, cls, box in zip(feature_strides, cls_probs, bbox_deltas):
            channels, h, w = cls.shape[1:]
            num_classes = channels // num_anchors
            flat = cls[b].reshape(-1)
            cand = np.nonzero(flat > np.float32(score_thresh))[0]
            cand = cand[np.argsort(-flat[cand], kind="stable")][:pre_nms_top_n]
            channel, pix = cand // (h * w), cand % (h * w)
            a = channel // num_classes
            anchors = grid_anchors(stride, scales, ratios, h, w)[pix * num_anchors + a]
            deltas = box[b].reshape(num_anchors, 4, h * w)[a, :, pix] * stds + means
            boxes.append(clip_boxes(_decode(anchors, deltas), im_info[b, 0], im_info[b, 1]))
            scores.append(flat[cand])
            classes.append(channel % num_classes + 1)
        boxes, scores = np.concatenate(boxes), np.concatenate(scores)
        classes = np.concatenate(classes)
        order = np.argsort(-scores, kind="stable")
        boxes, scores, classes = boxes[order], scores[order], classes[order]
        keep = []
        for c in np.unique(classes):
            idx = np.nonzero(classes == c)[0]
            keep.extend(idx[nms(boxes[idx], scores[idx], nms_threshold, max_keep=max_det)])
        keep = np.sort(np.asarray(keep, np.int64))[:max_det]
        out[b, :len(keep), :4] = boxes[keep]
        out[b, :len(keep), 4] = scores[keep]
        out[b, :len(keep), 5] = classes[keep]
    return out


def run(cls_probs, bbox_deltas, im_info, **kwargs):
    dets = retina_postprocess([mx.nd.array(c) for c in cls_probs],
                              [mx.nd.array(d) for d in bbox_deltas], mx.nd.array(im_info),
                              **kwargs)
    return dets.asnumpy()


def random_inputs(rng, batch, sizes, num_classes, num_anchors=9, quantize=False, low=-7.0):
    """Sigmoid probabilities of logits ~ N(low, 2.5) (a tail above 0.05), deltas ~ N(0, 0.3).
    quantize=True rounds probabilities to k/64 (many exact ties)."""
    cls, box = [], []
    for h, w in sizes:
        logits = rng.normal(low, 2.5, (batch, num_anchors * num_classes, h, w))
        prob = 1 / (1 + np.exp(-logits))
        if quantize:
            prob = np.round(prob * 64) / 64
        cls.append(prob.astype(np.float32))
        box.append(rng.normal(0, 0.3, (batch, 4 * num_anchors, h, w)).astype(np.float32))
    return cls, box


# ---------------------------------------------------------------- hand-computed
def tiny_inputs():
    # stride 8, scale 2, ratio 1: one 16x16 anchor [-4, -4, 11, 11] + 8 * (x, y, x, y) per
    # location of a 2x2 map; C = 2 classes, channel c = class c + 1.
    cls = np.full((1, 2, 2, 2), 0.01, np.float32)
    cls[0, 0, 0, 0] = 0.9   # class 1 at (0, 0): [0, 0, 11, 11] once clipped
    cls[0, 0, 0, 1] = 0.8   # class 1 at (0, 1): [4, 0, 19, 11]
    cls[0, 1, 0, 0] = 0.7   # class 2 at (0, 0)
    cls[0, 1, 1, 1] = 0.05  # not > score_thresh
    box = np.zeros((1, 4, 2, 2), np.float32)
    im_info = np.array([[32, 32, 1.0]], np.float32)
    return [cls], [box], im_info


TINY = dict(feature_strides=(8,), scales=(2,), ratios=(1,))


def test_hand_computed_tiny_case():
    cls, box, im_info = tiny_inputs()
    # IoU of the two class-1 boxes: 8 x 12 = 96 / (144 + 192 - 96) = 0.4 <= 0.5: both kept;
    # class 2 overlaps class 1's box fully but NMS is per class.
    dets = run(cls, box, im_info, max_det=4, **TINY)
    want = np.array([[0, 0, 11, 11, 0.9, 1], [4, 0, 19, 11, 0.8, 1], [0, 0, 11, 11, 0.7, 2],
                     [-1] * 6], np.float32)
    np.testing.assert_array_equal(dets, want[None])
    # Threshold 0.3: the class-1 box at (0, 1) goes.
    dets = run(cls, box, im_info, max_det=3, nms_threshold=0.3, **TINY)
    np.testing.assert_array_equal(dets[0, :, 4:], F32([[0.9, 1], [0.7, 2], [-1, -1]]))
    # max_det 1 keeps the best; pre_nms_top_n 1 keeps only the best candidate of the level.
    np.testing.assert_array_equal(run(cls, box, im_info, max_det=1, **TINY), want[None, :1])
    dets = run(cls, box, im_info, max_det=2, pre_nms_top_n=1, **TINY)
    np.testing.assert_array_equal(dets[0, :, 4:], F32([[0.9, 1], [-1, -1]]))


def test_hand_computed_deltas_means_and_stds():
    cls, box, im_info = tiny_inputs()
    # dx = 0.5 on anchor (0, 0) (delta channel 0): +8 px -> [4, -4, 19, 11] -> [4, 0, 19, 11].
    box[0][0, 0, 0, 0] = 0.5
    dets = run(cls, box, im_info, max_det=1, **TINY)
    np.testing.assert_array_equal(dets[0, 0], F32([4, 0, 19, 11, 0.9, 1]))
    # stds 0.1 scale it to 0.05 (+0.8 px): [-3.2, ., 11.8, .]; a dy mean of 0.25 adds 4 px
    # down: [., 0, ., 15]; x1 is clipped to 0.
    dets = run(cls, box, im_info, max_det=1, bbox_stds=(0.1, 0.1, 0.2, 0.2),
               bbox_means=(0, 0.25, 0, 0), **TINY)
    np.testing.assert_allclose(dets[0, 0], [0, 0, 11.8, 15, 0.9, 1], rtol=0, atol=1e-5)


def test_no_candidate_above_threshold_gives_all_minus_one_rows():
    rng = np.random.default_rng(0)
    cls, box = random_inputs(rng, 2, [(6, 5), (3, 3)], num_classes=3)
    cls = [np.minimum(c, 0.05) for c in cls]  # 0.05 is not > 0.05
    im_info = np.array([[48, 40, 1.0], [40, 48, 1.0]], np.float32)
    dets = run(cls, box, im_info, feature_strides=(8, 16), max_det=7)
    np.testing.assert_array_equal(dets, np.full((2, 7, 6), -1, np.float32))
    # A negative threshold makes every (anchor, class) a candidate.
    dets = run(cls, box, im_info, feature_strides=(8, 16), max_det=7, score_thresh=-1.0)
    assert (dets[..., 5] >= 1).all()


# ---------------------------------------------------------------- NumPy reference
@pytest.mark.parametrize("quantize", [False, True])
def test_matches_numpy_reference_multilevel_batch2(quantize):
    rng = np.random.default_rng(1 + quantize)
    # A 600x800-like pyramid shrunk: P3-P5 of a 200x264 image; image 1 is smaller (padding).
    sizes = [(25, 33), (13, 17), (7, 9)]
    cls, box = random_inputs(rng, 2, sizes, num_classes=6, quantize=quantize)
    im_info = np.array([[200, 264, 1.0], [150, 230, 0.8]], np.float32)
    kwargs = dict(feature_strides=(8, 16, 32), pre_nms_top_n=150, max_det=60)
    dets = run(cls, box, im_info, **kwargs)
    want = reference(cls, box, im_info, **kwargs)
    np.testing.assert_array_equal(dets, want)
    assert (dets[:, :, 5] > 0).sum() > 60, "the data should give many detections"
    # The per-level top-k bites: P3 has more candidates than pre_nms_top_n.
    assert (cls[0][0] > 0.05).sum() > 150


def test_matches_numpy_reference_large_level_and_many_classes():
    # 9 anchors x 80 classes on a 24x30 map: 518k scores, more than one CPU scan chunk.
    rng = np.random.default_rng(3)
    cls, box = random_inputs(rng, 1, [(24, 30), (12, 15)], num_classes=80, low=-8.0)
    im_info = np.array([[190, 237, 1.0]], np.float32)
    kwargs = dict(feature_strides=(8, 16), pre_nms_top_n=1000, max_det=100)
    np.testing.assert_array_equal(run(cls, box, im_info, **kwargs),
                                  reference(cls, box, im_info, **kwargs))


def test_reference_with_means_stds_and_custom_anchors():
    rng = np.random.default_rng(4)
    cls, box = random_inputs(rng, 2, [(10, 12), (5, 6)], num_classes=3, num_anchors=2)
    im_info = np.array([[80, 96, 1.0], [70, 90, 1.0]], np.float32)
    kwargs = dict(feature_strides=(8, 16), scales=(3, 5), ratios=(1,), bbox_means=(0.01, -0.02,
                  0.05, 0), bbox_stds=(0.1, 0.1, 0.2, 0.2), score_thresh=0.02,
                  pre_nms_top_n=40, nms_threshold=0.6, max_det=25)
    np.testing.assert_array_equal(run(cls, box, im_info, **kwargs),
                                  reference(cls, box, im_info, **kwargs))


def test_top_k_is_per_level_and_ties_keep_lower_candidate_number():
    # Two levels, one anchor, one class, stride 8 and 16; every score 0.5 (all tied), zero
    # deltas, pre_nms_top_n 2: each level keeps its 2 lowest locations, (0, 0) then (0, 1).
    cls = [np.full((1, 1, 3, 4), 0.5, np.float32), np.full((1, 1, 2, 2), 0.5, np.float32)]
    box = [np.zeros((1, 4, 3, 4), np.float32), np.zeros((1, 4, 2, 2), np.float32)]
    im_info = np.array([[64, 64, 1.0]], np.float32)
    dets = run(cls, box, im_info, feature_strides=(8, 16), scales=(1,), ratios=(1,),
               pre_nms_top_n=2, nms_threshold=1.0, max_det=5)
    # Anchors: stride 8 -> [0, 0, 7, 7] + 8 * (x, y); stride 16 -> [0, 0, 15, 15] + 16 * (...).
    np.testing.assert_array_equal(dets[0, :, :4], [[0, 0, 7, 7], [8, 0, 15, 7], [0, 0, 15, 15],
                                                   [16, 0, 31, 15], [-1] * 4])


def test_class_aware_nms_across_levels():
    # One anchor per location, scale 2: P3 (stride 8) anchors are 16x16, P4 (stride 16) 32x32.
    cls3 = np.zeros((1, 2, 4, 4), np.float32)
    cls4 = np.zeros((1, 2, 2, 2), np.float32)
    cls3[0, 0, 1, 1] = 0.6    # P3 class 1, anchor [4, 4, 19, 19]
    cls4[0, 0, 0, 0] = 0.7    # P4 class 1, anchor [-8, -8, 23, 23] -> clipped [0, 0, 23, 23]
    cls4[0, 1, 0, 0] = 0.65   # P4 class 2, the same box
    box3, box4 = np.zeros((1, 4, 4, 4), np.float32), np.zeros((1, 4, 2, 2), np.float32)
    im_info = np.array([[64, 64, 1]], np.float32)
    kw = dict(feature_strides=(8, 16), scales=(2,), ratios=(1,), max_det=4)
    # IoU([4, 4, 19, 19], [0, 0, 23, 23]) = 256 / 576 = 0.44: the P4 class-1 box suppresses
    # the P3 one (another level) at threshold 0.4, not at 0.5; class 2 is never suppressed.
    dets = run([cls3, cls4], [box3, box4], im_info, nms_threshold=0.4, **kw)
    np.testing.assert_array_equal(dets[0, :, 4:], F32([[0.7, 1], [0.65, 2], [-1, -1],
                                                       [-1, -1]]))
    dets = run([cls3, cls4], [box3, box4], im_info, nms_threshold=0.5, **kw)
    np.testing.assert_array_equal(dets[0, :, 4:], F32([[0.7, 1], [0.65, 2], [0.6, 1], [-1, -1]]))
    np.testing.assert_array_equal(dets[0, 2, :4], [4, 4, 19, 19])


def test_portrait_maps_clip_x_to_width_and_y_to_height_per_image():
    # One 16x16 anchor per location (stride 8, scale 2) on an 8x4 (H x W) map; the anchor at
    # (y=7, x=3), [20, 52, 35, 67], grown 4x (dw = dh = log 4) is [-4, 28, 59, 91].
    cls = np.zeros((2, 1, 8, 4), np.float32)
    cls[:, 0, 7, 3] = 0.9
    box = np.zeros((2, 4, 8, 4), np.float32)
    box[:, 2:, 7, 3] = np.log(4)
    im_info = np.array([[64, 32, 1.0], [48, 30, 0.5]], np.float32)
    dets = run([cls], [box], im_info, max_det=1, **TINY)
    np.testing.assert_allclose(dets[:, 0], [[0, 28, 31, 63, 0.9, 1], [0, 28, 29, 47, 0.9, 1]],
                               rtol=0, atol=1e-4)
    np.testing.assert_array_equal(dets, reference([cls], [box], im_info, max_det=1, **TINY))


# ---------------------------------------------------------------- graphs and errors
def test_module_graph_with_sigmoid_head():
    rng = np.random.default_rng(5)
    num_classes, num_anchors = 4, 9
    data = mx.sym.Variable("data")
    im_info = mx.sym.Variable("im_info")
    cls, box = [], []
    for stride in (8, 16):
        feat = mx.sym.Convolution(data, num_filter=8, kernel=(3, 3), pad=(1, 1),
                                  stride=(stride, stride), name=f"p{stride}")
        cls.append(mx.sym.sigmoid(mx.sym.Convolution(feat, num_filter=num_anchors * num_classes,
                                                     kernel=(1, 1), name=f"cls{stride}")))
        box.append(mx.sym.Convolution(feat, num_filter=4 * num_anchors, kernel=(1, 1),
                                      name=f"box{stride}"))
    dets = retina_postprocess(cls, box, im_info, feature_strides=(8, 16), score_thresh=0.3,
                              max_det=20, name="dets")
    group = mx.sym.Group([dets] + cls + box)
    mod = mx.mod.Module(group, data_names=["data", "im_info"], label_names=None)
    mod.bind(data_shapes=[("data", (2, 3, 96, 64)),
                          mx.io.DataDesc("im_info", (2, 3), layout="NC")], for_training=False)
    mod.init_params(mx.init.Normal(0.5))
    info = np.array([[96, 64, 1], [80, 60, 1]], np.float32)
    mod.forward(mx.io.DataBatch([mx.nd.array(rng.normal(0, 1, (2, 3, 96, 64))),
                                 mx.nd.array(info)]), is_train=False)
    outs = [o.asnumpy() for o in mod.get_outputs()]
    assert outs[0].shape == (2, 20, 6)
    want = reference(outs[1:3], outs[3:5], info, (8, 16), score_thresh=0.3, max_det=20)
    np.testing.assert_array_equal(outs[0], want)
    assert (outs[0][..., 5] > 0).any()


def test_training_graph_binds_with_zero_gradient():
    cls = mx.sym.Variable("cls")
    box = mx.sym.Variable("box")
    dets = retina_postprocess([cls], [box], mx.sym.Variable("im_info"), feature_strides=(8,))
    exe = mx.sym.MakeLoss(mx.sym.sum(dets)).simple_bind(mx.cpu(), cls=(1, 18, 4, 4),
                                                        box=(1, 36, 4, 4), im_info=(1, 3))
    exe.arg_dict["cls"][:] = 0.5
    exe.arg_dict["im_info"][:] = mx.nd.array([[32, 32, 1]])
    exe.forward(is_train=True)
    exe.backward()
    assert not exe.grad_dict["cls"].asnumpy().any() and not exe.grad_dict["box"].asnumpy().any()


def test_symbolic_shape_inference_and_errors():
    cls = [mx.sym.Variable(f"cls{i}") for i in range(5)]
    box = [mx.sym.Variable(f"box{i}") for i in range(5)]
    sym = retina_postprocess(cls, box, mx.sym.Variable("im_info"), max_det=100)
    sizes = [(75, 100), (38, 50), (19, 25), (10, 13), (5, 7)]
    shapes = {f"cls{i}": (2, 720, h, w) for i, (h, w) in enumerate(sizes)}
    shapes.update({f"box{i}": (2, 36, h, w) for i, (h, w) in enumerate(sizes)})
    _, out_shapes, _ = sym.infer_shape(im_info=(2, 3), **shapes)
    assert out_shapes == [(2, 100, 6)]
    with pytest.raises(mx.base.MXNetError, match=r"bbox_delta_1 must be \(B, 4A, H, W\)"):
        sym.infer_shape(im_info=(2, 3), **{**shapes, "box1": (2, 36, 38, 51)})
    with pytest.raises(mx.base.MXNetError, match="A = len.ratios. . len.scales. = 9"):
        sym.infer_shape(im_info=(2, 3), **{**shapes, "cls0": (2, 721, 75, 100)})


def test_bad_arguments_raise_clear_errors():
    cls, box = [mx.nd.zeros((1, 18, 4, 4))], [mx.nd.zeros((1, 36, 4, 4))]
    info = mx.nd.array([[32, 32, 1]])
    with pytest.raises(ValueError, match="one cls_prob and one bbox_delta per level"):
        retina_postprocess(cls, box, info, feature_strides=(8, 16))
    with pytest.raises(ValueError, match=r"bbox_deltas\[0\] must be \(B, 4A, H, W\)"):
        retina_postprocess(cls, [mx.nd.zeros((1, 36, 4, 5))], info, feature_strides=(8,))
    with pytest.raises(ValueError, match=r"A = len\(ratios\) \* len\(scales\) = 9"):
        retina_postprocess([mx.nd.zeros((1, 19, 4, 4))], box, info, feature_strides=(8,))
    with pytest.raises(TypeError, match="must be float32"):
        retina_postprocess([cls[0].astype("float16")], box, info, feature_strides=(8,))
    with pytest.raises(ValueError, match=r"nms_threshold must be in \[0, 1\]"):
        retina_postprocess(cls, box, info, feature_strides=(8,), nms_threshold=1.5)
    with pytest.raises(ValueError, match="bbox_stds must have 4 entries"):
        retina_postprocess(cls, box, info, feature_strides=(8,), bbox_stds=(1, 1))
    with pytest.raises(ValueError, match="strictly ascending"):
        retina_postprocess(cls * 2, box * 2, info, feature_strides=(16, 8))
    with pytest.raises(TypeError, match="all mx.sym.Symbol or all mx.nd.NDArray"):
        retina_postprocess(cls, box, mx.sym.Variable("im_info"), feature_strides=(8,))


@pytest.mark.skipif(mx.context.num_gpus() == 0, reason="needs a GPU and a CUDA build")
@pytest.mark.parametrize("quantize", [False, True])
def test_gpu_equals_cpu_bit_for_bit(quantize):
    rng = np.random.default_rng(8)
    sizes = [(50, 67), (25, 34), (13, 17), (7, 9), (4, 5)]
    cls, box = random_inputs(rng, 2, sizes, num_classes=80, quantize=quantize, low=-8.0)
    im_info = np.array([[400, 536, 1.0], [360, 500, 0.9]], np.float32)
    outs = []
    for ctx in (mx.cpu(), mx.gpu(0)):
        dets = retina_postprocess([mx.nd.array(c, ctx=ctx) for c in cls],
                                  [mx.nd.array(d, ctx=ctx) for d in box],
                                  mx.nd.array(im_info, ctx=ctx))
        outs.append(dets.asnumpy())
    np.testing.assert_array_equal(outs[1], outs[0])
    empty = retina_postprocess([mx.nd.zeros(c.shape, ctx=mx.gpu(0)) for c in cls],
                               [mx.nd.array(d, ctx=mx.gpu(0)) for d in box],
                               mx.nd.array(im_info, ctx=mx.gpu(0)))
    assert (empty.asnumpy() == -1).all()
