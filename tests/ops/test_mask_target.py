"""Tests of simpledet.ops.mask_target (C++ op _contrib_MaskTarget)."""
import mxnet as mx
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from simpledet.core.masks import encode_polygons
from simpledet.ops.mask_target import mask_target


def run(rois, gt_index, gt_polys, mask_size=28):
    """The op on NumPy inputs; returns the (N, M, M) NumPy targets."""
    out = mask_target(mx.nd.array(rois, dtype="float32"), mx.nd.array(gt_index, dtype="float32"),
                      mx.nd.array(gt_polys, dtype="float32"), mask_size=mask_size)
    return out.asnumpy()


def decode_row(row):
    """The polygons of a padded row as (n, 2) float32 arrays (empty when P <= 0)."""
    if row[0] <= 0:
        return []
    polys, o = [], 1
    for _ in range(int(row[0])):
        n = int(row[o])
        polys.append(row[o + 1:o + 1 + 2 * n].reshape(n, 2))
        o += 1 + 2 * n
    return polys


def reference(rois, gt_index, gt_polys, mask_size):
    """NumPy float32 evaluation of the op's exact rule: the sample point of pixel (i, j) is
    x1 + ((j + 0.5) * w) / M (y alike), and it is inside a polygon when an odd number of its
    edges (a, b) have exactly one end above py and px < ax + (bx - ax) * ((py - ay) / (by - ay))."""
    f32 = np.float32
    m = mask_size
    out = np.full((len(rois), m, m), -1, np.float32)
    cells = np.arange(m, dtype=np.float32) + f32(0.5)
    for r, (roi, g) in enumerate(zip(np.asarray(rois, np.float32), gt_index)):
        if g < 0:
            continue
        polys = decode_row(gt_polys[int(roi[0]), int(g)])
        if not polys:
            continue
        w = np.fmax(roi[3] - roi[1] + f32(1), f32(1))
        h = np.fmax(roi[4] - roi[2] + f32(1), f32(1))
        px = roi[1] + (cells * w) / f32(m)
        py = roi[2] + (cells * h) / f32(m)
        inside = np.zeros((m, m), bool)
        for p in polys:
            ax, ay = p[:, 0], p[:, 1]
            bx, by = np.roll(ax, -1), np.roll(ay, -1)
            cross = (ay[None, :] > py[:, None]) != (by[None, :] > py[:, None])  # (M_y, n)
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (py[:, None] - ay[None, :]) / (by - ay)[None, :]
                x = ax[None, :] + (bx - ax)[None, :] * t
            hits = cross[:, None, :] & (px[None, :, None] < x[:, None, :])  # (M_y, M_x, n)
            inside |= hits.sum(axis=2) % 2 == 1
        out[r] = inside
    return out


def coco_raster(polys, roi, mask_size):
    """pycocotools' M x M raster of polygons (flat lists) shifted by (x1, y1) and scaled by
    (M / w, M / h): the RoI-frame mask."""
    x1, y1, x2, y2 = np.asarray(roi[1:], np.float64)
    w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
    scaled = []
    for p in polys:
        q = np.asarray(p, np.float32).astype(np.float64).reshape(-1, 2)
        q = (q - [x1, y1]) * [mask_size / w, mask_size / h]
        scaled.append(q.ravel().tolist())
    rles = mask_utils.frPyObjects(scaled, mask_size, mask_size)
    return mask_utils.decode(mask_utils.merge(rles)), scaled


def edge_distance(point, polys):
    """Distance from point (2,) to the nearest edge of flat polygons."""
    best = np.inf
    for p in polys:
        a = np.asarray(p, np.float64).reshape(-1, 2)
        d = np.roll(a, -1, axis=0) - a
        t = np.clip(((point - a) * d).sum(1) / np.maximum((d * d).sum(1), 1e-12), 0, 1)
        best = min(best, np.sqrt((((a + t[:, None] * d) - point) ** 2).sum(1)).min())
    return best


def random_polygon(rng, cx, cy, radius, n, concave):
    """A simple polygon with n vertices, star-shaped around (cx, cy): convex (an ellipse's
    points) or concave (radii varying per vertex). Angles are evenly spaced with jitter, so
    there are no slivers (whose rasters differ from pycocotools' along most of the area)."""
    angles = (np.arange(n) + rng.uniform(-0.35, 0.35, n)) * 2 * np.pi / n + rng.uniform(0, 6.3)
    radii = radius * (rng.uniform(0.55, 1.0, n) if concave else np.ones(n))
    squash = rng.uniform(0.5, 1.5)
    return np.stack([cx + radii * np.cos(angles), cy + squash * radii * np.sin(angles)],
                    axis=1).ravel()


def random_case(rng, batch=1, num_gt=12, rois_per_gt=5, poly_len=300):
    """gts of 1-3 polygons (3-30 vertices, convex or concave), rois around each gt box with
    jitter (some cutting polygons off, tiny to large, non-square); returns rois, gt_index,
    gt_polys and the segmentations per image."""
    segs, rois, index = [], [], []
    for b in range(batch):
        image = []
        for g in range(num_gt):
            radius = np.exp(rng.uniform(np.log(1.5), np.log(150)))
            cx, cy = rng.uniform(0, 400, 2)
            polys = [random_polygon(rng, cx + rng.normal(0, radius / 2),
                                    cy + rng.normal(0, radius / 2),
                                    radius * rng.uniform(0.5, 1), int(rng.integers(3, 31)),
                                    rng.random() < 0.6)
                     for _ in range(int(rng.integers(1, 4)))]
            image.append(polys)
            pts = np.concatenate([p.reshape(-1, 2) for p in polys])
            lo, size = pts.min(0), pts.max(0) - pts.min(0)
            for _ in range(rois_per_gt):
                jitter = rng.normal(0, 0.12, 4) * np.tile(size, 2)
                x1, y1 = lo + jitter[:2]
                x2, y2 = lo + size - 1 + jitter[2:]
                rois.append([b, x1, y1, max(x2, x1 - 0.5), max(y2, y1 - 0.5)])
                index.append(g)
        segs.append(image)
    gt_polys = np.stack([encode_polygons(s, num_gt, poly_len) for s in segs])
    return np.array(rois, np.float32), np.array(index, np.float32), gt_polys, segs


def iou(a, b):
    a, b = a > 0, b > 0
    return (a & b).sum() / max((a | b).sum(), 1)


# ---------------------------------------------------------------------------------------------
# Hand cases.

def square_row(x1, y1, x2, y2, length=16):
    row = np.full(length, -1, np.float32)
    row[:10] = [1, 4, x1, y1, x2, y1, x2, y2, x1, y2]
    return row


def test_hand_square_covers_left_half():
    # roi [10, 20, 29, 39]: w = h = 20, covering [10, 30) x [20, 40). The square x in [10, 20)
    # (y beyond the roi) covers its left half: columns j with 10 + (j + 0.5) * 20 / 28 < 20,
    # i.e. j <= 13.
    rois = np.array([[0, 10, 20, 29, 39]], np.float32)
    gt = square_row(10, 0, 20, 100)[None, None]
    out = run(rois, [0], gt)
    expected = np.zeros((28, 28), np.float32)
    expected[:, :14] = 1
    np.testing.assert_array_equal(out[0], expected)
    out4 = run(rois, [0], gt, mask_size=4)
    np.testing.assert_array_equal(out4[0], np.tile([1, 1, 0, 0], (4, 1)))
    np.testing.assert_array_equal(out, reference(rois, [0], gt, 28))


def test_hand_non_square_roi_and_partial_cover():
    # roi [0, 0, 7, 3]: w = 8, h = 4, M = 4: sample points x = 1, 3, 5, 7; y = 0.5, 1.5, 2.5,
    # 3.5. The square [2, 6) x [1, 3) holds x in {3, 5}, y in {1.5, 2.5}.
    rois = np.array([[0, 0, 0, 7, 3]], np.float32)
    out = run(rois, [0], square_row(2, 1, 6, 3)[None, None], mask_size=4)
    np.testing.assert_array_equal(out[0], [[0, 0, 0, 0], [0, 1, 1, 0], [0, 1, 1, 0],
                                           [0, 0, 0, 0]])


def test_even_odd_within_a_polygon_union_across_polygons():
    # A pentagram drawn in one stroke: its centre is crossed twice (even) -> outside. The same
    # gt's second polygon, a square around the centre, puts it back (union).
    angles = np.pi / 2 + np.arange(5) * 4 * np.pi / 5
    star = np.stack([50 + 40 * np.cos(angles), 50 - 40 * np.sin(angles)], 1).ravel()
    square = np.array([40, 40, 60, 40, 60, 60, 40, 60], np.float64)
    rois = np.array([[0, 10, 10, 89, 89]] * 2, np.float32)
    gt = encode_polygons([[star], [star, square]], 2, 40)[None]
    out = run(rois, [0, 1], gt, mask_size=8)
    # Centre cells (3..4, 3..4) sample (45, 45)..(55, 55): inside the pentagon hole.
    assert (out[0, 3:5, 3:5] == 0).all()
    assert (out[1, 3:5, 3:5] == 1).all()
    assert out[0].sum() > 8 and ((out[1] == 1) | (out[0] == 0)).all()
    np.testing.assert_array_equal(out, reference(rois, [0, 1], gt, 8))


def test_ignored_rows_negative_index_p_zero_and_padding_rows():
    rois = np.array([[0, 0, 0, 9, 9]] * 4, np.float32)
    gt = encode_polygons([[[0, 0, 5, 0, 5, 5]], [], [[1, 1, 2, 1]]], 4, 12)[None]
    # row 1: P = 0 (no polygon); row 2: only a degenerate polygon, dropped -> P = 0; row 3:
    # padding (all -1).
    assert gt[0, 1, 0] == 0 and gt[0, 2, 0] == 0 and (gt[0, 3] == -1).all()
    out = run(rois, [-1, 1, 2, 3], gt, mask_size=6)
    assert (out == -1).all()
    out = run(rois, [0, -0.5, 1, 0], gt, mask_size=6)
    assert set(np.unique(out[[0, 3]])) == {0, 1} and (out[[1, 2]] == -1).all()


def test_zero_foreground_gives_all_ignored():
    rng = np.random.default_rng(3)
    rois, index, gt, _ = random_case(rng, batch=2, num_gt=3, rois_per_gt=4)
    out = run(rois, np.full(len(rois), -1, np.float32), gt, mask_size=14)
    assert out.shape == (len(rois), 14, 14) and (out == -1).all()


def test_tiny_and_degenerate_rois():
    # w = 1 (x2 == x1), x2 < x1 (width clamped to 1), sub-pixel polygon.
    gt = encode_polygons([[[10, 10, 10.5, 10, 10.5, 10.5, 10, 10.5]]], 1, 12)[None]
    rois = np.array([[0, 10, 10, 10, 10], [0, 10, 10, 8, 8], [0, 9.8, 9.9, 10.1, 10.3]],
                    np.float32)
    out = run(rois, [0, 0, 0], gt, mask_size=16)
    np.testing.assert_array_equal(out, reference(rois, [0, 0, 0], gt, 16))
    assert 0 < out[0].sum() < 256 and out[2].sum() > 0


# ---------------------------------------------------------------------------------------------
# Random polygons against pycocotools and against the exact NumPy rule.

def test_random_polygons_match_pycocotools(capsys):
    rng = np.random.default_rng(0)
    rois, index, gt, segs = random_case(rng, batch=2, num_gt=15, rois_per_gt=4)
    widths = rois[:, 3] - rois[:, 1] + 1
    assert widths.min() < 6 and widths.max() > 150, "want tiny and large rois"
    aspect = widths / (rois[:, 4] - rois[:, 2] + 1)
    assert aspect.min() < 0.6 and aspect.max() > 1.6, "want non-square rois"
    cut = [np.concatenate(segs[int(roi[0])][g]).reshape(-1, 2) for roi, g in
           zip(rois, index.astype(int))]
    cut = [(p.min(0) < roi[1:3]).any() or (p.max(0) > roi[3:5] + 1).any()
           for p, roi in zip(cut, rois)]
    assert np.mean(cut) > 0.5, "want polygons partly outside their roi"
    m = 28
    out = run(rois, index, gt, mask_size=m)
    ious, worst_distance = [], 0.0
    for r, (roi, g) in enumerate(zip(rois, index.astype(int))):
        ref, scaled = coco_raster(segs[int(roi[0])][g], roi, m)
        ious.append(iou(out[r], ref))
        # Every disagreement is a pixel whose sample point lies on (within rounding of) an edge.
        for i, j in zip(*np.nonzero((out[r] > 0) != (ref > 0))):
            worst_distance = max(worst_distance, edge_distance(np.array([j + .5, i + .5]),
                                                               scaled))
    worst = int(np.argmin(ious))
    with capsys.disabled():
        print(f"\nmask_target vs pycocotools: worst IoU {ious[worst]:.4f} (roi {worst}, "
              f"{len(ious)} rois), mean {np.mean(ious):.4f}, farthest disagreement "
              f"{worst_distance:.3f} px from an edge")
    assert min(ious) >= 0.95, (worst, ious[worst], rois[worst])
    assert worst_distance < 0.5


@pytest.mark.parametrize("mask_size", [1, 7, 28, 33])
def test_random_polygons_match_numpy_rule_exactly(mask_size):
    rng = np.random.default_rng(mask_size)
    rois, index, gt, _ = random_case(rng, batch=2, num_gt=8, rois_per_gt=3)
    index[::7] = -1
    out = run(rois, index, gt, mask_size=mask_size)
    np.testing.assert_array_equal(out, reference(rois, index, gt, mask_size))


def test_vertices_on_sample_rows_and_columns():
    # Integer polygons and rois whose sample points fall exactly on vertices and edges: the
    # half-open crossing rule decides, identically in the op and the reference.
    rng = np.random.default_rng(11)
    segs = [[rng.integers(0, 16, 2 * int(rng.integers(3, 9))).astype(np.float64)]
            for _ in range(20)]
    gt = encode_polygons(segs, 20, 40)[None]
    rois = np.array([[0, 0, 0, 15, 15], [0, 0.5, 0.5, 14.5, 14.5]] * 20, np.float32)
    index = np.repeat(np.arange(20), 2).astype(np.float32)
    out = run(rois, index, gt, mask_size=16)
    np.testing.assert_array_equal(out, reference(rois, index, gt, 16))


def test_batch_of_two_uses_each_images_rows():
    # Row 0 of image 0 and row 0 of image 1 are different shapes; rois of both images index 0.
    left = [[0, 0, 50, 0, 50, 100, 0, 100]]
    right = [[50, 0, 100, 0, 100, 100, 50, 100]]
    gt = np.stack([encode_polygons([left, right], 3, 20), encode_polygons([right], 3, 20)])
    rois = np.array([[0, 0, 0, 99, 99], [1, 0, 0, 99, 99], [0, 0, 0, 99, 99]], np.float32)
    out = run(rois, [0, 0, 1], gt, mask_size=4)
    halves = np.tile([1, 1, 0, 0], (4, 1))
    np.testing.assert_array_equal(out, [halves, 1 - halves, 1 - halves])
    rng = np.random.default_rng(5)
    rois, index, gt, _ = random_case(rng, batch=2, num_gt=5, rois_per_gt=3)
    np.testing.assert_array_equal(run(rois, index, gt), reference(rois, index, gt, 28))


# ---------------------------------------------------------------------------------------------
# Graphs.

def test_symbolic_shapes_and_types():
    sym = mask_target(mx.sym.Variable("rois"), mx.sym.Variable("gt_index"),
                      mx.sym.Variable("gt_polys"), mask_size=14, name="mask_target")
    _, out_shapes, _ = sym.infer_shape(rois=(256, 5), gt_index=(256,), gt_polys=(2, 7, 100))
    assert out_shapes == [(256, 14, 14)]
    _, out_types, _ = sym.infer_type(rois="float32", gt_index="float32", gt_polys="float32")
    assert out_types == [np.float32]
    assert sym.list_arguments() == ["rois", "gt_index", "gt_polys"]


def test_module_graph_forward_backward():
    # rois / gt_index / gt_polys fed as data, (B, S, ...) per image and flattened in the graph;
    # a mask head predicts from the rois and a masked sigmoid loss ignores the -1 targets.
    batch, per_image, m = 2, 6, 8
    rois = mx.sym.reshape(mx.sym.Variable("rois"), shape=(-1, 5))
    index = mx.sym.reshape(mx.sym.Variable("gt_index"), shape=(-1,))
    targets = mask_target(rois, index, mx.sym.Variable("gt_polys"), mask_size=m,
                          name="mask_target")
    features = mx.sym.BlockGrad(rois) / 100.0
    logits = mx.sym.reshape(mx.sym.FullyConnected(features, num_hidden=m * m, name="fc"),
                            shape=(-1, m, m))
    valid = targets >= 0
    loss = mx.sym.MakeLoss(mx.sym.sum(valid * mx.sym.relu(logits) - logits * targets * valid)
                           / 100.0, name="mask_loss")
    net = mx.sym.Group([loss, mx.sym.BlockGrad(targets)])
    mod = mx.mod.Module(net, data_names=["rois", "gt_index", "gt_polys"], label_names=None,
                        context=mx.cpu())
    mod.bind(data_shapes=[("rois", (batch, per_image, 5)), ("gt_index", (batch, per_image)),
                          ("gt_polys", (batch, 4, 120))], for_training=True,
             inputs_need_grad=True)
    mod.init_params(mx.init.Xavier())
    rng = np.random.default_rng(8)
    rois_np, index_np, gt_np, _ = random_case(rng, batch=2, num_gt=3, rois_per_gt=2,
                                              poly_len=120)
    index_np[[1, 7]] = -1
    gt_np = np.concatenate([gt_np, np.full((2, 1, 120), -1, np.float32)], axis=1)
    data = [mx.nd.array(rois_np.reshape(batch, per_image, 5)),
            mx.nd.array(index_np.reshape(batch, per_image)), mx.nd.array(gt_np)]
    mod.forward(mx.io.DataBatch(data), is_train=True)
    mod.backward()
    got = mod.get_outputs()[1].asnumpy()
    np.testing.assert_array_equal(got, reference(rois_np, index_np, gt_np, m))
    assert (got[[1, 7]] == -1).all() and (got == 1).any()
    grad = mod._exec_group.grad_arrays[mod._exec_group.param_names.index("fc_weight")][0]
    assert np.isfinite(grad.asnumpy()).all() and np.abs(grad.asnumpy()).sum() > 0
    for g in mod.get_input_grads():
        assert (g.asnumpy() == 0).all()


# ---------------------------------------------------------------------------------------------
# Errors.

GOOD_ROIS = np.array([[0, 0, 0, 9, 9]], np.float32)
GOOD_GT = square_row(0, 0, 5, 5)[None, None]


def test_bad_arguments_python():
    rois, index, gt = mx.nd.array(GOOD_ROIS), mx.nd.array([0]), mx.nd.array(GOOD_GT)
    with pytest.raises(TypeError, match="mask_size"):
        mask_target(rois, index, gt, mask_size=28.0)
    with pytest.raises(ValueError, match="mask_size"):
        mask_target(rois, index, gt, mask_size=0)
    with pytest.raises(TypeError, match="all be"):
        mask_target(mx.sym.Variable("r"), index, gt)
    with pytest.raises(TypeError, match="float32"):
        mask_target(rois, mx.nd.array([0], dtype="float64"), gt)
    with pytest.raises(ValueError, match="gt_index must be"):
        mask_target(rois, mx.nd.array([0, 0]), gt)
    with pytest.raises(ValueError, match="rois must be"):
        mask_target(mx.nd.array(GOOD_ROIS[:, :4]), index, gt)
    with pytest.raises(ValueError, match="gt_polys must be"):
        mask_target(rois, index, mx.nd.array(GOOD_GT[0]))
    with pytest.raises(ValueError, match="non-empty"):
        mask_target(mx.nd.array(np.zeros((0, 5))), mx.nd.array(np.zeros(0)), gt)


def test_bad_shapes_and_attributes_cpp():
    sym = mx.sym.contrib.MaskTarget(mx.sym.Variable("rois"), mx.sym.Variable("gt_index"),
                                    mx.sym.Variable("gt_polys"))
    with pytest.raises(mx.base.MXNetError, match="gt_index must be"):
        sym.infer_shape(rois=(4, 5), gt_index=(3,), gt_polys=(1, 2, 10))
    with pytest.raises(mx.base.MXNetError, match="rois must be"):
        sym.infer_shape(rois=(4, 4), gt_index=(4,), gt_polys=(1, 2, 10))
    with pytest.raises(mx.base.MXNetError, match="gt_polys must be"):
        sym.infer_shape(rois=(4, 5), gt_index=(4,), gt_polys=(2, 10))
    with pytest.raises(mx.base.MXNetError, match="float32"):
        sym.infer_type(rois="float32", gt_index="int32", gt_polys="float32")
    with pytest.raises(mx.base.MXNetError, match="zero-size"):
        mx.nd.contrib.MaskTarget(mx.nd.array(np.zeros((0, 5))), mx.nd.array(np.zeros(0)),
                                 mx.nd.array(GOOD_GT)).asnumpy()
    with pytest.raises(mx.base.MXNetError, match="mask_size"):
        mx.nd.contrib.MaskTarget(mx.nd.array(GOOD_ROIS), mx.nd.array([0]), mx.nd.array(GOOD_GT),
                                 mask_size="2000").asnumpy()


def _row(values, length=16):
    row = np.full(length, -1, np.float32)
    row[:len(values)] = values
    return row


@pytest.mark.parametrize("gt_index, row, batch_idx, match", [
    (1, None, 0, r"roi 1: gt_index 1 is not a row of gt_polys \(expected an integer in \[0, 1\)"),
    (0.5, None, 0, "roi 1: gt_index 0.5 is not a row"),
    (np.nan, None, 0, "roi 1: gt_index nan is not a row"),
    (0, None, 1, r"roi 1: batch index 1 \(rois\[1, 0\]\) is not an image of gt_polys"),
    (0, None, -1, "roi 1: batch index -1"),
    (0, [1, 2, 0, 0, 1, 1], 0, r"roi 1 \(image 0, gt row 0\): polygon 0 has n = 2 vertices"),
    (0, [2, 3, 0, 0, 1, 0, 1, 1, 3.5], 0, "polygon 1 has n = 3.5 vertices"),
    (0, [1.5, 3, 0, 0, 1, 0, 1, 1], 0, "polygon count P = 1.5 is not an integer"),
    (0, [1, 8, 0, 0, 1, 0, 1, 1], 0, "polygon 0 runs past the row length L = 16"),
    (0, [2, 3, 0, 0, 1, 0, 1, 1, 4], 0, "polygon 1 runs past the row length L = 16"),
    (0, [2, 7] + [0] * 14, 0, "polygon 1 runs past the row length L = 16"),
    (0, [3, 3, 0, 0, 1, 0, 1, 1, 3, 0, 0, 1, 0, 1, 1], 0, "polygon 2 has n = -1 vertices"),
    (0, [100, 3], 0, "P = 100 polygons run past the row length L = 16"),
])
def test_runtime_errors_name_the_roi_and_row(gt_index, row, batch_idx, match):
    rois = np.array([[0, 0, 0, 9, 9], [batch_idx, 0, 0, 9, 9]], np.float32)
    gt = GOOD_GT.copy() if row is None else _row(row)[None, None]
    with pytest.raises(mx.base.MXNetError, match=match):
        run(rois, [-1, gt_index], gt)


def test_malformed_rows_are_fine_when_no_roi_uses_them():
    gt = np.stack([GOOD_GT[0, 0], _row([1, 2, 0, 0, 1, 1])])[None]
    out = run(GOOD_ROIS, [0], gt, mask_size=4)
    assert set(np.unique(out)) == {0, 1}
