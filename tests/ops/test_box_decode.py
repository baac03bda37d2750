"""Tests of simpledet.ops.box_decode (_contrib_BoxDecode), CPU only: hand cases, the NumPy
reference (simpledet.core.boxes.decode_boxes + clip_boxes) on a portrait and a landscape image,
padding rows, a Module graph with its zero backward, and argument checks.

Exactness: the op decodes with the C library's expf, NumPy 1.23 float32 np.exp with its own SIMD
code (1-2 ulp apart), so the comparison is bit-exact when the de-normalized dw/dh are 0 and
within 1e-3 px otherwise (as tests/ops/test_detection_postprocess.py explains).
"""
import mxnet as mx
import numpy as np
import pytest

from simpledet.core.boxes import BOX_DELTA_CLIP, clip_boxes, decode_boxes
from simpledet.ops.box_decode import box_decode

STDS = (0.1, 0.1, 0.2, 0.2)
# Image 0 portrait (480 high, 320 wide), image 1 landscape and smaller than its bucket.
IM_INFO = np.array([[480, 320, 0.75], [300, 400, 0.6667]], np.float32)


def reference(rois, deltas, im_info, means=(0., 0., 0., 0.), stds=STDS):
    out = rois.copy()
    for i, row in enumerate(rois):
        b = row[0]
        if not (0 <= b < len(im_info) and b == int(b)):
            continue
        box = decode_boxes(row[None, 1:], deltas[i:i + 1], means, stds)
        out[i, 1:] = clip_boxes(box, im_info[int(b), 0], im_info[int(b), 1])[0]
    return out


def run(rois, deltas, im_info=IM_INFO, **kwargs):
    return box_decode(mx.nd.array(rois), mx.nd.array(deltas), mx.nd.array(im_info),
                      **kwargs).asnumpy()


def random_case(rng, per_image=50, zero_wh=False):
    """Rois of both images interleaved (the op reads each row's own batch index), some reaching
    past their image so the clip acts, deltas of a few stds."""
    rows = []
    for b, (height, width, _) in enumerate(IM_INFO):
        x1 = rng.uniform(-10, width, per_image)
        y1 = rng.uniform(-10, height, per_image)
        w, h = rng.uniform(4, 200, per_image), rng.uniform(4, 200, per_image)
        rows.append(np.stack([np.full(per_image, b), x1, y1, x1 + w, y1 + h], axis=1))
    rois = np.stack(rows, axis=1).reshape(-1, 5).astype(np.float32)  # b alternates
    deltas = rng.normal(0, 2, (len(rois), 4)).astype(np.float32)
    if zero_wh:
        deltas[:, 2:] = 0
    return rois, deltas


def test_hand_computed_case():
    # roi 0: 10..49 x 20..59 (40 x 40, centre 29.5, 39.5); dx = 0.1 * 1 -> +4 px, dy = 0.1 * -2
    # -> -8 px; no size change. roi 1 (image 1): zero deltas, clipped to 400 x 300.
    rois = np.array([[0, 10, 20, 49, 59], [1, 350, 250, 450, 320]], np.float32)
    deltas = np.array([[1, -2, 0, 0], [0, 0, 0, 0]], np.float32)
    np.testing.assert_array_equal(run(rois, deltas), [[0, 14, 12, 53, 51],
                                                      [1, 350, 250, 399, 299]])
    # dw = 0.2 * ln(2) / 0.2 doubles the width around the centre: 20..59 -> 0..79 wide 80
    grow = np.array([[0, 20, 20, 59, 59]], np.float32)
    out = run(grow, np.array([[0, 0, np.log(2) / 0.2, 0]], np.float32))
    np.testing.assert_allclose(out, [[0, -0.5 + 0.5, 20, 79, 59]], atol=1e-4)


def test_portrait_image_clips_x_to_width_and_y_to_height():
    rois = np.array([[0, 300, 440, 340, 500], [1, 380, 250, 420, 320]], np.float32)
    out = run(rois, np.zeros((2, 4), np.float32))
    np.testing.assert_array_equal(out, [[0, 300, 440, 319, 479], [1, 380, 250, 399, 299]])


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_numpy_reference_exactly_without_size_change(seed):
    rois, deltas = random_case(np.random.default_rng(seed), zero_wh=True)
    np.testing.assert_array_equal(run(rois, deltas), reference(rois, deltas, IM_INFO))


@pytest.mark.parametrize("means,stds", [((0., 0., 0., 0.), STDS),
                                        ((0.05, -0.05, 0.1, 0.0), (0.033, 0.033, 0.067, 0.067))])
def test_matches_numpy_reference_random_deltas(means, stds):
    rois, deltas = random_case(np.random.default_rng(2))
    out = run(rois, deltas, bbox_means=means, bbox_stds=stds)
    np.testing.assert_array_equal(out[:, 0], rois[:, 0])
    np.testing.assert_allclose(out, reference(rois, deltas, IM_INFO, means, stds), atol=1e-3)


def test_dw_dh_clip():
    rois = np.array([[0, 1000, 1000, 1009, 1009]], np.float32)  # far from the image edges
    huge = run(rois, np.array([[0, 0, 100, 100]], np.float32), IM_INFO * [100, 100, 1],
               bbox_stds=(1, 1, 1, 1))
    side = np.exp(BOX_DELTA_CLIP) * 10  # 625 px
    np.testing.assert_allclose(huge[0, 3] - huge[0, 1] + 1, side, rtol=1e-5)
    np.testing.assert_allclose(huge[0, 4] - huge[0, 2] + 1, side, rtol=1e-5)


def test_padding_and_bad_batch_rows_are_copied():
    rois = np.array([[-1, 0, 0, 0, 0], [2, 5, 5, 9, 9], [0.5, 1, 1, 8, 8], [0, 5, 5, 9, 9]],
                    np.float32)
    deltas = np.ones((4, 4), np.float32)
    out = run(rois, deltas)
    np.testing.assert_array_equal(out[:3], rois[:3])
    assert not np.array_equal(out[3], rois[3])


def test_module_graph_forward_and_zero_backward():
    rois, deltas = random_case(np.random.default_rng(3), per_image=8)
    names = ["rois", "deltas", "im_info"]
    syms = [mx.sym.var(n) for n in names]
    # As in a cascade: the decoded rois feed a (here trivial) next stage, and a loss sits on top.
    decoded = box_decode(*syms, bbox_stds=(0.05, 0.05, 0.1, 0.1), name="decode_2nd")
    assert decoded.list_outputs() == ["decode_2nd_output"]
    _, out_shapes, _ = decoded.infer_shape(rois=rois.shape, deltas=deltas.shape, im_info=(2, 3))
    assert out_shapes == [rois.shape]
    loss = mx.sym.make_loss(mx.sym.sum(mx.sym.slice_axis(decoded, axis=1, begin=1, end=5)))
    net = mx.sym.Group([loss, mx.sym.BlockGrad(decoded)])
    mod = mx.mod.Module(net, data_names=names, label_names=None, context=mx.cpu())
    shapes = [mx.io.DataDesc(n, x.shape, layout="NC" if n != "im_info" else "BC")
              for n, x in zip(names, (rois, deltas, IM_INFO))]
    mod.bind(data_shapes=shapes, for_training=True, inputs_need_grad=True)
    mod.init_params()
    mod.forward(mx.io.DataBatch([mx.nd.array(x) for x in (rois, deltas, IM_INFO)]),
                is_train=True)
    out = mod.get_outputs()[1].asnumpy()
    np.testing.assert_allclose(out, reference(rois, deltas, IM_INFO,
                                              stds=(0.05, 0.05, 0.1, 0.1)), atol=1e-3)
    mod.backward()
    grads = [g.asnumpy() for g in mod.get_input_grads()]
    assert [g.shape for g in grads] == [rois.shape, deltas.shape, IM_INFO.shape]
    assert all((g == 0).all() for g in grads)


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(bbox_means=(0, 0, 0)), ValueError, "bbox_means must have 4"),
    (dict(bbox_stds=0.1), TypeError, "bbox_stds must be a sequence"),
    (dict(bbox_stds=(0.1, 0.1, 0, 0.2)), ValueError, r"bbox_stds\[2\] must be positive"),
    (dict(bbox_means=(0, 0, float("nan"), 0)), ValueError, r"bbox_means\[2\] must be finite"),
    (dict(bbox_stds=(0.1, "a", 0.2, 0.2)), TypeError, r"bbox_stds\[1\] must be a number"),
])
def test_bad_arguments(kwargs, err, match):
    with pytest.raises(err, match=match):
        box_decode(mx.nd.zeros((2, 5)), mx.nd.zeros((2, 4)), mx.nd.ones((1, 3)), **kwargs)


def test_bad_inputs():
    rois, deltas, im_info = mx.nd.zeros((2, 5)), mx.nd.zeros((2, 4)), mx.nd.ones((1, 3))
    with pytest.raises(TypeError, match="must all be mx.sym.Symbol or all mx.nd.NDArray"):
        box_decode(rois.asnumpy(), deltas, im_info)
    with pytest.raises(TypeError, match="deltas must be float32, got float64"):
        box_decode(rois, deltas.astype("float64"), im_info)
    with pytest.raises(ValueError, match="rois must be"):
        box_decode(mx.nd.zeros((2, 4)), deltas, im_info)
    with pytest.raises(ValueError, match=r"deltas must be \(2, 4\)"):
        box_decode(rois, mx.nd.zeros((2, 8)), im_info)
    with pytest.raises(ValueError, match="im_info must be"):
        box_decode(rois, deltas, mx.nd.ones((1, 4)))


def test_symbolic_shape_and_type_errors_are_clear():
    decoded = box_decode(*[mx.sym.var(n) for n in ("rois", "deltas", "im_info")])
    with pytest.raises(mx.base.MXNetError, match=r"deltas must be \(4, 4\)"):
        decoded.infer_shape(rois=(4, 5), deltas=(4, 12), im_info=(1, 3))
    with pytest.raises(mx.base.MXNetError, match="im_info must be"):
        decoded.infer_shape(rois=(4, 5), deltas=(4, 4), im_info=(1, 2))
    with pytest.raises(mx.base.MXNetError, match="rois must be float32, got float64"):
        decoded.infer_type(rois="float64", deltas="float32", im_info="float32")
    with pytest.raises(mx.base.MXNetError, match="bbox_stds must have 4 entries"):
        mx.sym.contrib.BoxDecode(*[mx.sym.var(n) for n in ("rois", "deltas", "im_info")],
                                 bbox_stds="(1, 2)")
