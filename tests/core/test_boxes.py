"""simpledet.core.boxes on hand-computed cases, independently of the ops it is the reference of.

Convention "+1": [x1, y1, x2, y2] covers pixels x1..x2, so width = x2 - x1 + 1 and a box whose
corners coincide is one pixel. Every IoU below is worked out by counting pixels.
"""
import numpy as np
import pytest

from simpledet.core.boxes import (
    BOX_DELTA_CLIP,
    box_area,
    box_iou,
    clip_boxes,
    decode_boxes,
    encode_boxes,
    nms,
)

STDS = (0.1, 0.1, 0.2, 0.2)


def test_area_counts_pixels():
    np.testing.assert_array_equal(box_area([[0, 0, 9, 9], [5, 5, 5, 5], [2, 3, 4, 9]]),
                                  [100, 1, 21])


@pytest.mark.parametrize("a,b,iou", [
    ([0, 0, 9, 9], [0, 0, 9, 9], 1.0),            # identical
    ([3, 3, 3, 3], [3, 3, 3, 3], 1.0),            # one pixel, identical (not 0 / 0)
    ([0, 0, 9, 9], [2, 2, 6, 6], 25 / 100),       # nested: 5x5 pixels inside 10x10
    ([0, 0, 9, 9], [0, 0, 9, 4], 50 / 100),       # nested, sharing three edges
    ([0, 0, 4, 4], [10, 10, 14, 14], 0.0),        # disjoint
    ([0, 0, 4, 4], [5, 0, 9, 4], 0.0),            # adjacent: columns 0..4 and 5..9
    ([0, 0, 4, 4], [4, 0, 8, 4], 5 / 45),         # touching: both cover column 4 (5 pixels)
    ([0, 0, 4, 4], [4, 4, 8, 8], 1 / 49),         # touching at one corner pixel
    ([0, 0, 9, 9], [5, 0, 14, 9], 50 / 150),      # half overlap
])
def test_iou_of_hand_cases_under_the_plus_one_convention(a, b, iou):
    assert box_iou([a], [b]).shape == (1, 1)
    assert box_iou([a], [b])[0, 0] == pytest.approx(iou, abs=1e-6)
    assert box_iou([b], [a])[0, 0] == pytest.approx(iou, abs=1e-6)  # symmetric


def test_iou_matrix_layout_and_empty_inputs():
    a = [[0, 0, 9, 9], [0, 0, 4, 4]]
    b = [[0, 0, 9, 9], [10, 10, 14, 14], [0, 0, 4, 4]]
    iou = box_iou(a, b)
    assert iou.shape == (2, 3) and iou.dtype == np.float32
    np.testing.assert_allclose(iou, [[1, 0, 0.25], [0.25, 0, 1]], atol=1e-6)
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)
    assert box_iou(a, np.zeros((0, 4))).shape == (2, 0)


def test_encode_a_hand_case():
    # src: 10 x 10 at centre (4.5, 4.5); dst: 20 x 10 at centre (14.5, 9.5)
    src, dst = [[0, 0, 9, 9]], [[5, 5, 24, 14]]
    np.testing.assert_allclose(encode_boxes(src, dst), [[1.0, 0.5, np.log(2), 0.0]], atol=1e-6)
    np.testing.assert_allclose(encode_boxes(src, dst, stds=STDS),
                               [[10.0, 5.0, np.log(2) / 0.2, 0.0]], atol=1e-5)
    np.testing.assert_allclose(encode_boxes(src, src, means=(0.5, 0, 0, -1)),
                               [[-0.5, 0, 0, 1]], atol=1e-6)


def test_decode_a_hand_case_and_identity():
    boxes = np.array([[0, 0, 9, 9]], np.float32)
    np.testing.assert_allclose(decode_boxes(boxes, [[1.0, 0.5, np.log(2), 0.0]]),
                               [[5, 5, 24, 14]], atol=1e-4)
    np.testing.assert_allclose(decode_boxes(boxes, np.zeros((1, 4))), boxes, atol=1e-6)


def test_decode_clips_huge_size_deltas():
    # dw = 10 is clipped at log(1000 / 16): a 16-pixel box becomes 1000 pixels wide, no inf
    out = decode_boxes([[0, 0, 15, 15]], [[0, 0, 10.0, np.log(2)]])
    assert np.exp(BOX_DELTA_CLIP) * 16 == pytest.approx(1000)
    np.testing.assert_allclose(out, [[7.5 - 499.5, 7.5 - 15.5, 7.5 + 499.5, 7.5 + 15.5]],
                               atol=1e-3)


def test_encode_decode_round_trip_on_random_boxes():
    rng = np.random.default_rng(0)
    # sizes 10..300 pixels: size ratios stay below exp(BOX_DELTA_CLIP) = 62.5 (no clipping)
    xy = rng.uniform(0, 500, size=(200, 2))
    src = np.concatenate([xy, xy + rng.uniform(9, 299, size=(200, 2))], axis=1)
    xy = rng.uniform(0, 500, size=(200, 2))
    dst = np.concatenate([xy, xy + rng.uniform(9, 299, size=(200, 2))], axis=1)
    for means, stds in (((0, 0, 0, 0), (1, 1, 1, 1)), ((0.1, -0.2, 0.05, 0), STDS)):
        deltas = encode_boxes(src, dst, means, stds)
        np.testing.assert_allclose(decode_boxes(src, deltas, means, stds), dst, atol=2e-3)


def test_clip_to_pixel_indices():
    out = clip_boxes([[-5, -3, 120, 90], [10, 20, 30, 40]], height=64, width=100)
    np.testing.assert_array_equal(out, [[0, 0, 99, 63], [10, 20, 30, 40]])
    assert out.dtype == np.float32


# boxes: 0 and 1 overlap at IoU 90/110; 3 overlaps 0 at 1/3 and 1 at 60/140; 2 is alone
NMS_BOXES = [[0, 0, 9, 9], [1, 0, 10, 9], [20, 20, 29, 29], [5, 0, 14, 9]]
NMS_SCORES = [0.9, 0.8, 0.7, 0.85]


@pytest.mark.parametrize("thresh,max_keep,kept", [
    (0.5, -1, [0, 3, 2]),   # 1 suppressed by 0 (0.82); 3 survives (0.33)
    (0.3, -1, [0, 2]),      # 3 suppressed by 0 (0.33 > 0.3), 1 by 0
    (0.9, -1, [0, 3, 1, 2]),
    (0.5, 2, [0, 3]),       # max_keep stops in score order
])
def test_nms_hand_case(thresh, max_keep, kept):
    out = nms(NMS_BOXES, NMS_SCORES, thresh, max_keep)
    assert out.dtype == np.int64
    assert out.tolist() == kept


def test_nms_suppresses_only_above_the_threshold_and_breaks_ties_by_index():
    # IoU exactly 0.5: kept at threshold 0.5 (strictly greater suppresses)
    assert nms([[0, 0, 9, 9], [0, 0, 9, 4]], [0.9, 0.8], 0.5).tolist() == [0, 1]
    assert nms([[0, 0, 9, 9], [0, 0, 9, 4]], [0.9, 0.8], 0.49).tolist() == [0]
    assert nms([[0, 0, 9, 9], [0, 0, 9, 9]], [0.5, 0.5], 0.5).tolist() == [0]
    assert nms([[0, 0, 9, 9], [0, 0, 9, 9]], [0.5, 0.6], 0.5).tolist() == [1]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []
