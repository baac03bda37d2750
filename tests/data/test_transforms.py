"""Transforms: reading, resize, flip (+1 convention), normalization, bucket padding."""
import cv2
import numpy as np
import pytest

from simpledet.data import transforms as T
from simpledet.data.coco import DatasetError


def test_read_image_is_rgb(tmp_path):
    bgr = np.zeros((6, 8, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    path = tmp_path / "blue.png"
    cv2.imwrite(str(path), bgr)
    rgb = T.read_image(path, expected_hw=(6, 8))
    assert rgb.shape == (6, 8, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 2] == 255).all() and (rgb[..., 0] == 0).all()


def test_read_image_errors_name_the_file(tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(DatasetError, match="missing.jpg"):
        T.read_image(missing)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"not a jpeg at all")
    with pytest.raises(DatasetError, match="corrupt.jpg.*corrupt"):
        T.read_image(corrupt)
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(DatasetError, match="good.png: image is 4x5.*says 5x4"):
        T.read_image(good, expected_hw=(5, 4))


@pytest.mark.parametrize("hw, short, long, expected", [
    ((480, 640), 800, 1333, 800 / 480),     # short side limits
    ((200, 1000), 800, 1333, 1333 / 1000),  # long side limits
    ((640, 480), 600, 1000, 600 / 480),     # portrait
])
def test_resize_scale_and_im_info(hw, short, long, expected):
    image = np.zeros((*hw, 3), np.uint8)
    resized, im_info = T.resize_image(image, short, long)
    assert im_info[2] == pytest.approx(expected, rel=1e-6)
    assert resized.shape[:2] == (round(hw[0] * expected), round(hw[1] * expected))
    assert tuple(im_info[:2]) == resized.shape[:2]
    assert min(resized.shape[:2]) <= short and max(resized.shape[:2]) <= long


def test_scale_boxes_scales_and_clips():
    im_info = np.array([100, 150, 2.5], np.float32)
    boxes = np.array([[0, 0, 9, 19], [10, 20, 59.9, 39.99]], np.float32)
    out = T.scale_boxes(boxes, im_info)
    # pixels 0..9 span [0, 10), resized [0, 25): pixels 0..24
    np.testing.assert_allclose(out[0], [0, 0, 24, 49])
    # 60.9 * 2.5 - 1 = 151.25 > w - 1 = 149: clipped into the image.
    np.testing.assert_allclose(out[1], [25, 50, 149, 99], rtol=1e-6)


@pytest.mark.parametrize("hw", [(427, 640), (640, 427), (612, 612), (200, 300), (256, 320)])
def test_unscale_boxes_inverts_scale_boxes_up_to_the_borders(hw):
    height, width = hw
    _, im_info = T.resize_image(np.zeros((height, width, 3), np.uint8), 320, 480)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, [width - 2, height - 2], (20, 2))
    boxes = np.concatenate([xy, rng.uniform(xy, [width - 1, height - 1])], axis=1)
    boxes = np.concatenate([boxes, [[0, 0, width - 1, height - 1]]]).astype(np.float32)
    scaled = T.scale_boxes(boxes, im_info)
    # the whole image maps to the whole resized image, and back
    np.testing.assert_allclose(scaled[-1], [0, 0, im_info[1] - 1, im_info[0] - 1], atol=0.5)
    back = T.unscale_boxes(scaled, im_info[2], height, width)
    np.testing.assert_allclose(back, boxes, rtol=0, atol=1e-3)
    # "+1" widths scale by s
    np.testing.assert_allclose(scaled[:-1, 2:] - scaled[:-1, :2] + 1,
                               (boxes[:-1, 2:] - boxes[:-1, :2] + 1) * im_info[2], atol=1e-4)


def test_flip_boxes_plus_one_convention():
    boxes = np.array([[0, 2, 3, 5], [6, 0, 9, 1]], np.float32)
    flipped = T.flip_boxes(boxes, width=10)
    np.testing.assert_array_equal(flipped, [[6, 2, 9, 5], [0, 0, 3, 1]])
    # Widths are preserved in the +1 convention.
    np.testing.assert_array_equal(flipped[:, 2] - flipped[:, 0], boxes[:, 2] - boxes[:, 0])


def test_flip_matches_pixels():
    image = np.zeros((5, 10, 3), np.uint8)
    box = np.array([[2, 1, 4, 3]], np.float32)
    image[1:4, 2:5] = 255
    flipped_image = T.flip_image(image)
    x1, y1, x2, y2 = T.flip_boxes(box, 10)[0].astype(int)
    assert (flipped_image[y1:y2 + 1, x1:x2 + 1] == 255).all()
    assert flipped_image.sum() == image.sum()


def test_flip_twice_is_identity():
    rng = np.random.default_rng(0)
    boxes = rng.uniform(0, 50, (7, 4)).astype(np.float32)
    boxes[:, 2:] += boxes[:, :2]
    np.testing.assert_allclose(T.flip_boxes(T.flip_boxes(boxes, 123), 123), boxes, atol=1e-4)
    polys = [[[1.5, 2.0, 10.0, 2.0, 10.0, 8.0]], [[0, 0, 4, 0, 4, 4, 0, 4], [6, 6, 7, 6, 7, 7]]]
    for obj in polys:
        twice = T.flip_segmentation(T.flip_segmentation(obj, 20), 20)
        for a, b in zip(twice, obj):
            np.testing.assert_allclose(a, b)
    once = T.flip_polygons(polys[0], 20)
    np.testing.assert_allclose(once[0], [18.5, 2.0, 10.0, 2.0, 10.0, 8.0])


def test_flipped_polygon_rasterises_to_the_mirrored_mask():
    # Vertices are continuous coordinates: x' = W - x mirrors the raster exactly (W - 1 - x
    # would shift it a pixel).
    from pycocotools import mask as mask_utils

    width, height = 23, 17
    poly = [2.0, 3.0, 15.0, 3.0, 15.0, 12.0, 7.0, 14.0]
    raster = mask_utils.decode(mask_utils.frPyObjects([poly], height, width))[:, :, 0]
    flipped = T.flip_polygons([poly], width)
    raster_flipped = mask_utils.decode(mask_utils.frPyObjects(flipped, height, width))[:, :, 0]
    assert raster.sum() > 50
    np.testing.assert_array_equal(raster_flipped, raster[:, ::-1])


def test_flip_rle_matches_flipped_mask():
    from pycocotools import mask as mask_utils

    mask = np.zeros((6, 9), np.uint8)
    mask[1:3, 0:4] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    flipped = T.flip_segmentation(rle, 9)
    np.testing.assert_array_equal(mask_utils.decode(flipped), mask[:, ::-1])


def test_random_flip_is_seeded_and_consistent():
    image = np.arange(2 * 6 * 3, dtype=np.uint8).reshape(2, 6, 3)
    boxes = np.array([[0, 0, 1, 1]], np.float32)
    decisions = []
    for seed in range(20):
        out, out_boxes, segs, flipped = T.random_flip(np.random.default_rng(seed), image, boxes,
                                                      [[[0, 0, 1, 0, 1, 1]]])
        again = T.random_flip(np.random.default_rng(seed), image, boxes)[3]
        assert flipped == again
        decisions.append(flipped)
        if flipped:
            np.testing.assert_array_equal(out, image[:, ::-1])
            np.testing.assert_array_equal(out_boxes, [[4, 0, 5, 1]])
            np.testing.assert_allclose(segs[0][0], [6, 0, 5, 0, 5, 1])
        else:
            assert out is image and out_boxes is boxes
    assert 0 < sum(decisions) < 20


def test_choose_short_side_covers_the_list():
    rng = np.random.default_rng(1)
    picks = {T.choose_short_side(rng, (600, 700, 800)) for _ in range(100)}
    assert picks == {600, 700, 800}
    assert T.choose_short_side(rng, [800]) == 800


def test_bucket_shapes():
    assert T.bucket_shape(480, 640, 800, 1333) == (800, 1344)
    assert T.bucket_shape(640, 480, 800, 1333) == (1344, 800)
    assert T.bucket_shape(500, 500, 600, 1000, size_divisor=64) == (640, 1024)
    assert T.bucket_shape(10, 10, 33, 65, size_divisor=1) == (33, 65)


def test_normalize_pad_chw_shapes_and_values():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 50, 3)).astype(np.uint8)
    mean, std = (1.0, 2.0, 3.0), (2.0, 4.0, 0.5)
    out = T.normalize_pad_chw(image, mean, std, (32, 64))
    assert out.shape == (3, 32, 64) and out.dtype == np.float32
    reference = T.pad_chw(T.to_chw(T.normalize(image, mean, std)), (32, 64))
    np.testing.assert_allclose(out, reference, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(out[:, 5, 7], (image[5, 7] - np.array(mean)) / np.array(std),
                               rtol=1e-6)
    assert (out[:, 30:, :] == 0).all() and (out[:, :, 50:] == 0).all()
    # Writing into a dirty buffer clears the padding too.
    buffer = np.full((3, 32, 64), 7.0, np.float32)
    T.normalize_pad_chw(image, mean, std, (32, 64), out=buffer)
    np.testing.assert_array_equal(buffer, out)
    with pytest.raises(ValueError, match="does not fit"):
        T.normalize_pad_chw(image, mean, std, (16, 64))


def test_resized_images_fit_their_bucket():
    for h, w in [(480, 640), (640, 480), (333, 1000), (1000, 333), (512, 512)]:
        for short in (640, 800):
            _, im_info = T.resize_image(np.zeros((h, w, 3), np.uint8), short, 1333)
            bh, bw = T.bucket_shape(h, w, 800, 1333)
            assert im_info[0] <= bh and im_info[1] <= bw
            assert bh % 32 == 0 and bw % 32 == 0
