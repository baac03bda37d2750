"""FPN ROIAlign: hand-computed cases, a NumPy reference, equality with contrib.ROIAlign,
numerical gradients, padding rois, batch 2, and use inside a Module graph."""
import math

import mxnet as mx
import numpy as np
import pytest

from simpledet.ops.fpn_roi_align import fpn_roi_align

FPN_STRIDES = (4, 8, 16, 32)


# ---------------------------------------------------------------- NumPy reference
def ref_level(box, strides, canonical_scale=224.0, canonical_level=4):
    if len(strides) == 1:
        return 0
    w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
    lvl = math.floor(canonical_level + math.log2(math.sqrt(w * h) / canonical_scale + 1e-6))
    levels = [int(round(math.log2(s))) for s in strides]
    lvl = min(max(lvl, levels[0]), levels[-1])
    return levels.index(lvl)


def ref_bilinear(fmap, y, x):
    """fmap (H, W); contrib.ROIAlign's bilinear rule."""
    height, width = fmap.shape
    if y < -1 or y > height or x < -1 or x > width:
        return 0.0
    y, x = max(y, 0.0), max(x, 0.0)
    y0, x0 = int(y), int(x)
    if y0 >= height - 1:
        y0 = y1 = height - 1
        y = float(y0)
    else:
        y1 = y0 + 1
    if x0 >= width - 1:
        x0 = x1 = width - 1
        x = float(x0)
    else:
        x1 = x0 + 1
    ly, lx = y - y0, x - x0
    return ((1 - ly) * (1 - lx) * fmap[y0, x0] + (1 - ly) * lx * fmap[y0, x1]
            + ly * (1 - lx) * fmap[y1, x0] + ly * lx * fmap[y1, x1])


def ref_fpn_roi_align(rois, maps, strides, pooled=(2, 2), sampling_ratio=2, aligned=False):
    n, (ph_n, pw_n) = len(rois), pooled
    channels = maps[0].shape[1]
    out = np.zeros((n, channels, ph_n, pw_n))
    for i, roi in enumerate(rois):
        b = int(roi[0])
        if b < 0:
            continue
        lvl = ref_level(roi[1:], strides)
        scale, off = 1.0 / strides[lvl], 0.5 if aligned else 0.0
        x1, y1, x2, y2 = (roi[1:] * scale) - off
        rw, rh = x2 - x1, y2 - y1
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph_n, rw / pw_n
        gh = sampling_ratio if sampling_ratio > 0 else math.ceil(rh / ph_n)
        gw = sampling_ratio if sampling_ratio > 0 else math.ceil(rw / pw_n)
        for c in range(channels):
            fmap = maps[lvl][b, c]
            for ph in range(ph_n):
                for pw in range(pw_n):
                    acc = 0.0
                    for iy in range(gh):
                        y = y1 + ph * bh + (iy + 0.5) * bh / gh
                        for ix in range(gw):
                            x = x1 + pw * bw + (ix + 0.5) * bw / gw
                            acc += ref_bilinear(fmap, y, x)
                    out[i, c, ph, pw] = acc / max(gh * gw, 1)
    return out


def random_rois(rng, n, batch, height, width, max_side=None):
    max_side = max_side or max(height, width)
    x1 = rng.uniform(0, width - 2, n)
    y1 = rng.uniform(0, height - 2, n)
    w = rng.uniform(1, max_side, n)
    h = rng.uniform(1, max_side, n)
    return np.stack([rng.integers(0, batch, n), x1, y1, np.minimum(x1 + w, width - 1),
                     np.minimum(y1 + h, height - 1)], axis=1).astype(np.float32)


def pyramid(rng, batch, channels, height, width, strides, dtype=np.float32):
    return [rng.standard_normal((batch, channels, math.ceil(height / s), math.ceil(width / s)))
            .astype(dtype) for s in strides]


# ---------------------------------------------------------------- tests
def test_hand_computed_single_bin_average():
    # A 4x4 map holding x + 10*y; a roi over map pixels [0, 2] x [0, 2] (stride 1), one bin
    # sampled 2x2 at x, y in {0.5, 1.5}.
    fmap = (np.arange(4)[None, :] + 10 * np.arange(4)[:, None]).astype(np.float32)
    out = fpn_roi_align(mx.nd.array([[0, 0, 0, 2, 2]]), [mx.nd.array(fmap[None, None])],
                        feature_strides=(1,), pooled_size=(1, 1), sampling_ratio=2).asnumpy()
    # bilinear of a linear function is exact: mean of x + 10y over the four samples (x, y in
    # {0.5, 1.5}) = 1.0 + 10 * 1.0 = 11.
    assert out.shape == (1, 1, 1, 1)
    assert out[0, 0, 0, 0] == pytest.approx(11.0, abs=1e-5)


def test_hand_computed_level_assignment():
    # Level = floor(4 + log2(side / 224)), clamped to P2..P5: each map is constant = its level,
    # so the pooled value tells which map a roi used.
    maps = [mx.nd.full((1, 1, 64, 64), float(lvl)) for lvl in (2, 3, 4, 5)]
    sides = {30: 2, 111: 2, 112: 3, 223: 3, 224: 4, 447: 4, 448: 5, 1000: 5}
    rois = mx.nd.array([[0, 0, 0, s - 1, s - 1] for s in sides])
    out = fpn_roi_align(rois, maps, feature_strides=FPN_STRIDES, pooled_size=1).asnumpy()
    assert out[:, 0, 0, 0].tolist() == list(sides.values())


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, 0])
def test_matches_numpy_reference_fpn_batch2(aligned, sampling_ratio):
    rng = np.random.default_rng(0)
    maps = pyramid(rng, 2, 3, 512, 640, FPN_STRIDES)
    rois = random_rois(rng, 24, 2, 512, 640)
    rois[3, 0] = -1  # a padding roi
    rois[:2] = [[0, 0, 0, 600, 500], [1, 10, 10, 630, 510]]  # large enough for P5
    out = fpn_roi_align(mx.nd.array(rois), [mx.nd.array(m) for m in maps],
                        feature_strides=FPN_STRIDES, pooled_size=(2, 3),
                        sampling_ratio=sampling_ratio, aligned=aligned).asnumpy()
    ref = ref_fpn_roi_align(rois, maps, FPN_STRIDES, (2, 3), sampling_ratio, aligned)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
    assert not out[3].any()
    levels = {ref_level(r[1:], FPN_STRIDES) for r in rois}
    assert levels == {0, 1, 2, 3}, "test data should exercise every level"


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, -1])
def test_single_level_equals_contrib_roialign_forward_and_backward(aligned, sampling_ratio):
    rng = np.random.default_rng(1)
    fmap = mx.nd.array(rng.standard_normal((2, 4, 20, 24)))
    rois = mx.nd.array(random_rois(rng, 16, 2, 20 * 8, 24 * 8, max_side=80))
    head = mx.nd.array(rng.standard_normal((16, 4, 7, 7)))
    results = []
    for use_ours in (True, False):
        data = fmap.copy()
        data.attach_grad()
        with mx.autograd.record():
            if use_ours:
                out = fpn_roi_align(rois, [data], feature_strides=(8,), pooled_size=7,
                                    sampling_ratio=sampling_ratio, aligned=aligned)
            else:
                out = mx.nd.contrib.ROIAlign(data, rois, pooled_size=(7, 7), spatial_scale=1 / 8,
                                             sample_ratio=sampling_ratio, aligned=aligned)
        out.backward(head)
        results.append((out.asnumpy(), data.grad.asnumpy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-5, atol=1e-5)


def test_numeric_gradient_float64():
    rng = np.random.default_rng(2)
    maps = pyramid(rng, 1, 2, 24, 24, (4, 8), dtype=np.float64)
    rois = np.array([[0, 1.3, 2.2, 20.7, 17.1], [0, 3.5, 0.4, 90.0, 80.2]], dtype=np.float64)
    sym = mx.sym.contrib.FPNROIAlign(mx.sym.Variable("rois"), mx.sym.Variable("p2"),
                                     mx.sym.Variable("p3"), feature_strides="(4, 8)",
                                     pooled_size="(2, 2)", sampling_ratio="2",
                                     canonical_scale="40")
    levels = {ref_level(r[1:], (4, 8), canonical_scale=40) for r in rois}
    assert levels == {0, 1}
    mx.test_utils.check_numeric_gradient(
        sym, {"rois": rois, "p2": maps[0], "p3": maps[1]}, grad_nodes=["p2", "p3"],
        numeric_eps=1e-4, rtol=1e-4, atol=1e-6, dtype=np.float64)


def test_all_padding_rois_give_zero_output_and_gradient():
    maps = [mx.nd.ones((2, 3, 16, 16)), mx.nd.ones((2, 3, 8, 8))]
    rois = mx.nd.array([[-1, 0, 0, 10, 10]] * 4)
    for m in maps:
        m.attach_grad()
    with mx.autograd.record():
        out = fpn_roi_align(rois, maps, feature_strides=(4, 8), pooled_size=2)
    out.backward(mx.nd.ones_like(out))
    assert out.shape == (4, 3, 2, 2) and not out.asnumpy().any()
    assert not maps[0].grad.asnumpy().any() and not maps[1].grad.asnumpy().any()


def test_zero_rois_with_numpy_shape_semantics():
    with mx.np_shape(True):
        out = fpn_roi_align(mx.nd.zeros((0, 5)), [mx.nd.ones((1, 2, 8, 8))],
                            feature_strides=(4,), pooled_size=2)
        assert out.asnumpy().shape == (0, 2, 2, 2)


def test_module_forward_backward():
    rng = np.random.default_rng(3)
    data = mx.sym.Variable("data")
    rois = mx.sym.Variable("rois")
    p2 = mx.sym.Convolution(data, num_filter=4, kernel=(3, 3), pad=(1, 1), stride=(4, 4), name="c2")
    p3 = mx.sym.Convolution(data, num_filter=4, kernel=(3, 3), pad=(1, 1), stride=(8, 8), name="c3")
    # canonical scale 32 at level 3: 10-pixel rois pool from p2, 60-pixel rois from p3.
    pooled = fpn_roi_align(rois, [p2, p3], feature_strides=(4, 8), pooled_size=3, name="pool",
                           canonical_scale=32, canonical_level=3)
    loss = mx.sym.MakeLoss(mx.sym.sum(pooled * pooled))
    mod = mx.mod.Module(loss, data_names=["data", "rois"], label_names=None)
    # rois have no batch axis: a layout without "N" tells Module not to check it.
    mod.bind(data_shapes=[("data", (2, 3, 64, 64)), mx.io.DataDesc("rois", (6, 5), layout="RC")])
    mod.init_params(mx.init.Normal(0.1))
    batch = mx.io.DataBatch([mx.nd.array(rng.standard_normal((2, 3, 64, 64))),
                             mx.nd.array([[0, 1, 1, 10, 10], [1, 5, 5, 14, 14], [0, 2, 3, 61, 62],
                                          [1, 0, 0, 59, 59], [0, 30, 30, 39, 39],
                                          [1, 3, 0, 62, 59]])])
    mod.forward_backward(batch)
    grads = mod._exec_group.grad_arrays  # noqa: SLF001  (per-param gradient lists)
    assert np.isfinite(mod.get_outputs()[0].asnumpy()).all()
    assert all(np.abs(g[0].asnumpy()).sum() > 0 for g in grads)


def test_symbolic_shape_inference():
    sym = fpn_roi_align(mx.sym.Variable("rois"), [mx.sym.Variable(f"p{i}") for i in range(2, 6)],
                        feature_strides=FPN_STRIDES, pooled_size=(7, 7))
    shapes = {"rois": (1024, 5), **{f"p{i}": (2, 256, 200 // 2 ** (i - 2), 336 // 2 ** (i - 2))
                                    for i in range(2, 6)}}
    _, out_shapes, _ = sym.infer_shape(**shapes)
    assert out_shapes == [(1024, 256, 7, 7)]


def test_bad_arguments_raise_clear_errors():
    rois, fmap = mx.nd.zeros((2, 5)), mx.nd.zeros((1, 2, 8, 8))
    with pytest.raises(ValueError, match="one stride per feature map"):
        fpn_roi_align(rois, [fmap, fmap], feature_strides=(4,))
    with pytest.raises(ValueError, match="ascending powers of two"):
        fpn_roi_align(rois, [fmap], feature_strides=(6,))
    with pytest.raises(ValueError, match=r"rois must be \(N, 5\)"):
        fpn_roi_align(mx.nd.zeros((2, 4)), [fmap], feature_strides=(4,))
    with pytest.raises(TypeError, match="float32"):
        fpn_roi_align(rois, [fmap.astype("float16")], feature_strides=(4,))
    with pytest.raises(ValueError, match="pooled_size"):
        fpn_roi_align(rois, [fmap], feature_strides=(4,), pooled_size=(0, 2))


def test_float16_symbol_fails_with_message_from_infer_type():
    sym = fpn_roi_align(mx.sym.Variable("rois"), [mx.sym.Variable("p2")], feature_strides=(4,))
    with pytest.raises(RuntimeError, match="rois must be float32 or float64, got float16"):
        sym.simple_bind(mx.cpu(), rois=(2, 5), p2=(1, 2, 8, 8),
                        type_dict={"rois": "float16", "p2": "float16"})
