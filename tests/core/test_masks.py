"""Tests of simpledet.core.masks: polygon packing, pasting and RLE encoding."""
import json

import mxnet as mx
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from simpledet.core.masks import encode_polygons, masks_to_rle, paste_masks, polygon_encoding_length


def decode_row(row):
    """The polygons of a padded row as (n, 2) arrays, and the floats the encoding used."""
    if row[0] <= 0:
        return [], 1
    polys, o = [], 1
    for _ in range(int(row[0])):
        n = int(row[o])
        polys.append(row[o + 1:o + 1 + 2 * n].reshape(n, 2))
        o += 1 + 2 * n
    return polys, o


def random_segmentation(rng, max_polys=3, max_vertices=20):
    return [rng.uniform(0, 500, 2 * int(rng.integers(3, max_vertices + 1))).round(2)
            for _ in range(int(rng.integers(1, max_polys + 1)))]


# ---------------------------------------------------------------------------------------------
# encode_polygons / polygon_encoding_length.

def test_encode_round_trip_and_padding():
    rng = np.random.default_rng(0)
    segs = [random_segmentation(rng) for _ in range(5)]
    segs[2] = [list(p) for p in segs[2]]  # lists work as well as arrays
    out = encode_polygons(segs, 8, 300)
    assert out.shape == (8, 300) and out.dtype == np.float32
    for g, seg in enumerate(segs):
        polys, used = decode_row(out[g])
        assert used == polygon_encoding_length(seg)
        assert len(polys) == len(seg)
        for got, want in zip(polys, seg):
            np.testing.assert_array_equal(got.ravel(), np.asarray(want, np.float32))
        assert (out[g, used:] == -1).all()
    assert (out[5:] == -1).all()


def test_encode_empty_and_degenerate_polygons():
    segs = [[], [[1, 2, 3, 4]], [[0, 0, 4, 0, 4, 4], [7, 7]], np.array([[0, 0, 1, 0, 1, 1]])]
    out = encode_polygons(segs, 4, 12)
    np.testing.assert_array_equal(out[0], [0] + [-1] * 11)
    np.testing.assert_array_equal(out[1], [0] + [-1] * 11)
    np.testing.assert_array_equal(out[2], [1, 3, 0, 0, 4, 0, 4, 4] + [-1] * 4)
    np.testing.assert_array_equal(out[3], [1, 3, 0, 0, 1, 0, 1, 1] + [-1] * 4)
    assert polygon_encoding_length([]) == 1
    assert polygon_encoding_length([[0, 0, 4, 0, 4, 4], [7, 7]]) == 8
    assert encode_polygons([], 0, 5).shape == (0, 5)
    assert encode_polygons([], 2, 3).tolist() == [[-1] * 3] * 2


def test_encode_exact_fit_is_not_thinned():
    seg = [np.arange(12, dtype=np.float64)]  # 6 vertices: 1 + 1 + 12 = 14 floats
    out = encode_polygons([seg], 1, 14)
    np.testing.assert_array_equal(out[0], np.r_[1, 6, np.arange(12)])


def test_thinning_takes_the_smallest_step_that_fits():
    rng = np.random.default_rng(1)
    big = rng.uniform(0, 100, 2 * 40)   # 40 vertices
    small = rng.uniform(0, 100, 2 * 7)  # 7 vertices
    other = rng.uniform(0, 100, 2 * 30)
    # Unthinned: 1 + 81 + 15 = 97. Step 2: 20 + 4 vertices -> 1 + 41 + 9 = 51. Step 3: 14 + 3
    # -> 1 + 29 + 7 = 37. poly_len 40 needs step 3 (51 > 40 >= 37).
    assert polygon_encoding_length([big, small]) == 97
    out = encode_polygons([[big, small], [other]], 2, 64)
    polys, used = decode_row(out[0])
    assert used == 51  # step 2 fits 64
    np.testing.assert_array_equal(polys[0].ravel(), big.reshape(-1, 2)[::2].ravel()
                                  .astype(np.float32))
    np.testing.assert_array_equal(polys[1].ravel(), small.reshape(-1, 2)[::2].ravel()
                                  .astype(np.float32))
    other_polys, _ = decode_row(out[1])  # 61 floats: fits, untouched
    np.testing.assert_array_equal(other_polys[0].ravel(), other.astype(np.float32))
    polys, used = decode_row(encode_polygons([[big, small]], 1, 40)[0])
    assert used == 37
    np.testing.assert_array_equal(polys[0], big.reshape(-1, 2)[::3].astype(np.float32))
    # 7 vertices at step 3 keep 0, 3, 6 (ceil(7 / 3) = 3).
    np.testing.assert_array_equal(polys[1], small.reshape(-1, 2)[[0, 3, 6]].astype(np.float32))


def test_thinning_keeps_three_vertices_spread_evenly():
    square = [0, 0, 10, 0, 10, 10, 0, 10, 0, 5]       # 5 vertices
    many = np.arange(2 * 50, dtype=np.float64)          # 50 vertices
    # Smallest fitting: 1 + 7 + (1 + 2 * ceil(50 / k)) <= 30 -> ceil(50 / k) <= 10 -> k = 5;
    # the 5-vertex polygon keeps max(ceil(5 / 5), 3) = 3 vertices: 0, 1, 3 (floor(i * 5 / 3)).
    polys, used = decode_row(encode_polygons([[square, many]], 1, 30)[0])
    assert used == 1 + 7 + 21
    np.testing.assert_array_equal(polys[0], [[0, 0], [10, 0], [0, 10]])
    np.testing.assert_array_equal(polys[1], many.reshape(-1, 2)[::5])
    # At 1 + 7 * 2 = 15 floats each polygon keeps exactly 3: step 17 is the first with
    # ceil(50 / k) = 3, keeping vertices 0, 17, 34 of the big one.
    polys, used = decode_row(encode_polygons([[square, many]], 1, 15)[0])
    assert used == 15 and [len(p) for p in polys] == [3, 3]
    np.testing.assert_array_equal(polys[0], [[0, 0], [10, 0], [0, 10]])
    np.testing.assert_array_equal(polys[1], many.reshape(-1, 2)[[0, 17, 34]])


def test_encode_errors():
    with pytest.raises(ValueError, match=r"gt 1: .* poly_len = 14"):
        encode_polygons([[[0, 0, 1, 0, 1, 1]], [[0, 0, 1, 0, 1, 1]] * 2], 2, 14)
    with pytest.raises(ValueError, match="max_gt = 1"):
        encode_polygons([[], []], 1, 10)
    with pytest.raises(ValueError, match=r"segmentations\[0\]\[1\] has 7 coordinates"):
        encode_polygons([[[0, 0, 1, 0, 1, 1], [0] * 7]], 1, 30)
    with pytest.raises(ValueError, match="non-finite"):
        encode_polygons([[[0, 0, 1, np.nan, 1, 1]]], 1, 30)
    with pytest.raises(TypeError, match=r"segmentations\[0\] is an RLE dict"):
        encode_polygons([{"size": [4, 4], "counts": "04"}], 1, 30)
    with pytest.raises(ValueError, match="poly_len"):
        encode_polygons([], 1, 0)


# ---------------------------------------------------------------------------------------------
# paste_masks.

def test_paste_constant_mask_fills_the_pixels_whose_centres_are_in_the_box():
    # Box [2.3, 1, 5.6, 3]: region [2.3, 6.6) x [1, 4) -> columns 2..6, rows 1..3.
    out = paste_masks(np.ones((1, 28, 28)), [[2.3, 1, 5.6, 3]], 8, 9)
    assert out.shape == (1, 8, 9) and out.dtype == np.uint8
    expected = np.zeros((8, 9), np.uint8)
    expected[1:4, 2:7] = 1
    np.testing.assert_array_equal(out[0], expected)


def test_paste_bilinear_and_threshold():
    # M = 2 over box [0, 0, 3, 3]: cell centres x = 1, 3; pixel centres 0.5 .. 3.5 sample cells
    # s = -0.25 (clamped), 0.25, 0.75, 1.25 (clamped): values 0, 0.25, 0.75, 1.
    mask = np.array([[[0.0, 1.0], [0.0, 1.0]]])
    np.testing.assert_array_equal(paste_masks(mask, [[0, 0, 3, 3]], 4, 4)[0],
                                  np.tile([0, 0, 1, 1], (4, 1)))
    np.testing.assert_array_equal(paste_masks(mask, [[0, 0, 3, 3]], 4, 4, threshold=0.2)[0],
                                  np.tile([0, 1, 1, 1], (4, 1)))
    np.testing.assert_array_equal(paste_masks(mask, [[0, 0, 3, 3]], 4, 4, threshold=0.75)[0],
                                  np.tile([0, 0, 1, 1], (4, 1)))


def test_paste_zero_detections():
    out = paste_masks(np.zeros((0, 28, 28), np.float32), np.zeros((0, 4)), 30, 40)
    assert out.shape == (0, 30, 40) and out.dtype == np.uint8


def test_paste_boxes_crossing_the_border_equal_a_cropped_larger_canvas():
    rng = np.random.default_rng(2)
    masks = rng.uniform(0, 1, (6, 14, 14))
    boxes = np.array([[-10.5, -3, 20, 15], [30, 25, 55.2, 44], [-5, -5, 60, 50],
                      [45, -2.5, 49.3, 3], [70, 70, 80, 80], [2, 3, 2, 3]], np.float64)
    height, width, pad = 40, 50, 16
    out = paste_masks(masks, boxes, height, width)
    big = paste_masks(masks, boxes + pad, height + 2 * pad, width + 2 * pad)
    np.testing.assert_array_equal(out, big[:, pad:pad + height, pad:pad + width])
    assert (out[4] == 0).all() and out[0].any() and out[2].any()


def test_paste_op_targets_back_into_the_image():
    # A polygon's target at M = 28 over its own box (x1 = min x, x2 = max x - 1: the "+1" box
    # whose region is the polygon's extent), pasted back, matches pycocotools' image raster.
    from simpledet.ops.mask_target import mask_target

    rng = np.random.default_rng(3)
    height, width = 240, 320
    segs, boxes = [], []
    for _ in range(8):
        n = int(rng.integers(5, 25))
        angles = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * np.pi / n
        radii = rng.uniform(0.6, 1.0, n) * rng.uniform(15, 80)
        cx, cy = rng.uniform(60, 260), rng.uniform(60, 180)
        aspect = rng.uniform(0.4, 2.5)
        poly = np.stack([cx + radii * np.cos(angles) * aspect, cy + radii * np.sin(angles)], 1)
        poly = np.round(poly, 2)
        segs.append([poly.ravel()])
        lo, hi = poly.min(0), poly.max(0)
        boxes.append([lo[0], lo[1], hi[0] - 1, hi[1] - 1])
    boxes = np.array(boxes, np.float32)
    sides = np.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1], 1)
    assert (sides > 28).any() and (sides < 28).any() and (np.ptp(sides, axis=1) > 5).all()
    gt = encode_polygons(segs, len(segs), 60)[None]
    rois = np.concatenate([np.zeros((len(segs), 1), np.float32), boxes], axis=1)
    targets = mask_target(mx.nd.array(rois), mx.nd.arange(len(segs)), mx.nd.array(gt)).asnumpy()
    pasted = paste_masks(targets, boxes, height, width)
    ious = []
    for d, seg in enumerate(segs):
        ref = mask_utils.decode(mask_utils.merge(
            mask_utils.frPyObjects([p.tolist() for p in seg], height, width))).astype(bool)
        got = pasted[d].astype(bool)
        ious.append((got & ref).sum() / (got | ref).sum())
    assert min(ious) >= 0.9, ious


# ---------------------------------------------------------------------------------------------
# masks_to_rle.

def test_masks_to_rle_round_trip():
    rng = np.random.default_rng(4)
    masks = (rng.uniform(size=(3, 17, 23)) > 0.6).astype(np.uint8)
    masks[1] = 0
    masks[2, 3:9, 4:20] = 1
    rles = masks_to_rle(masks)
    assert len(rles) == 3
    json.dumps(rles)
    for rle, mask in zip(rles, masks):
        assert isinstance(rle["counts"], str) and rle["size"] == [17, 23]
        decoded = mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode()})
        np.testing.assert_array_equal(decoded, mask)
        np.testing.assert_array_equal(mask_utils.decode(rle), mask)  # str counts decode too
    assert masks_to_rle(np.zeros((0, 5, 6), bool)) == []
    bool_rles = masks_to_rle(masks.astype(bool))
    assert [r["counts"] for r in bool_rles] == [r["counts"] for r in rles]
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        masks_to_rle(masks[0])
