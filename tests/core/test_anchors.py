"""simpledet.core.anchors on hand-computed cases: the classic py-faster-rcnn anchor table, and
centres / sizes per stride, scale and ratio ("+1" convention: width = x2 - x1 + 1)."""
import numpy as np
import pytest

from simpledet.core.anchors import base_anchors, grid_anchors


def centres(anchors):
    return np.stack([(anchors[:, 0] + anchors[:, 2]) / 2, (anchors[:, 1] + anchors[:, 3]) / 2],
                    axis=1)


def sizes(anchors):
    return np.stack([anchors[:, 2] - anchors[:, 0] + 1, anchors[:, 3] - anchors[:, 1] + 1],
                    axis=1)


def test_stride_16_matches_the_py_faster_rcnn_table():
    # generate_anchors() of py-faster-rcnn (base 16, ratios 0.5 1 2, scales 8 16 32), written out
    expected = [[-84, -40, 99, 55], [-176, -88, 191, 103], [-360, -184, 375, 199],
                [-56, -56, 71, 71], [-120, -120, 135, 135], [-248, -248, 263, 263],
                [-36, -80, 51, 95], [-80, -168, 95, 183], [-168, -344, 183, 359]]
    out = base_anchors(16, (8, 16, 32), (0.5, 1, 2))
    assert out.dtype == np.float32 and out.shape == (9, 4)
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("stride,scale,ratio,size", [
    (4, 8, 1.0, (32, 32)),     # FPN P2: 4 x 4 base, 8 strides
    (8, 8, 1.0, (64, 64)),
    (64, 8, 1.0, (512, 512)),  # P6
    (16, 2, 1.0, (32, 32)),
    # ratio = h / w: 256 / 0.5 = 512, sqrt 22.6 -> w 23, h round(11.5) = 12, times 8
    (16, 8, 0.5, (184, 96)),
    (16, 8, 2.0, (88, 176)),   # 256 / 2 = 128, sqrt 11.3 -> w 11, h 22
    (4, 8, 0.5, (48, 24)),     # 16 / 0.5 = 32, sqrt 5.66 -> w 6, h 3
    (4, 8, 2.0, (24, 48)),     # 16 / 2 = 8, sqrt 2.83 -> w 3, h 6
])
def test_base_anchor_is_centred_on_the_first_stride_cell(stride, scale, ratio, size):
    anchor = base_anchors(stride, (scale,), (ratio,))
    np.testing.assert_array_equal(sizes(anchor), [size])
    # the centre of pixels 0..stride-1
    np.testing.assert_array_equal(centres(anchor), [[(stride - 1) / 2, (stride - 1) / 2]])


def test_anchor_order_is_ratio_major():
    out = base_anchors(8, (2, 4), (0.5, 1, 2))
    ws_hs = sizes(out)
    # anchor k: ratio k // 2, scale k % 2
    for k, (w, h) in enumerate(ws_hs):
        ratio, scale = (0.5, 1, 2)[k // 2], (2, 4)[k % 2]
        assert h / w == pytest.approx(ratio, rel=0.25)
        assert ws_hs[2 * (k // 2)][0] * scale / 2 == w


def test_grid_anchors_shift_by_the_stride_in_y_x_anchor_order():
    stride, height, width = 16, 2, 3
    base = base_anchors(stride, (8,), (0.5, 1, 2))
    grid = grid_anchors(stride, (8,), (0.5, 1, 2), height, width)
    assert grid.shape == (height * width * 3, 4) and grid.dtype == np.float32
    for y in range(height):
        for x in range(width):
            for a in range(3):
                row = (y * width + x) * 3 + a
                np.testing.assert_array_equal(grid[row], base[a] + [16 * x, 16 * y, 16 * x, 16 * y])
    # centres: (stride - 1) / 2 + stride * (x, y), sizes unchanged
    expected = [[7.5 + 16 * x, 7.5 + 16 * y] for y in range(height) for x in range(width)]
    for a in range(3):
        np.testing.assert_array_equal(centres(grid[a::3]), expected)
    np.testing.assert_array_equal(sizes(grid[1::3]), [[128, 128]] * 6)  # ratio 1, scale 8
