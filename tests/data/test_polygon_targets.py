"""The gt polygon assigner (Mask R-CNN's loader input): rows follow gt_boxes, polygons are
resized and mirrored like the image (checked against the pixels the loader produced), RLE
objects become polygons, objects without a segmentation get rows without polygons."""
import os
import pickle

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from simpledet.data.loader import DetectionLoader
from simpledet.data.targets import GtPolygonAssigner, ImageSample
from simpledet.data.targets.polygons import input_polygons, rle_to_polygons


def decode_row(row):
    """The polygons (flat arrays) of one gt_polys row; None for a padding row."""
    if row[0] < 0:
        return None
    polys, i = [], 1
    for _ in range(int(row[0])):
        n = int(row[i])
        polys.append(row[i + 1:i + 1 + 2 * n].astype(np.float64))
        i += 1 + 2 * n
    return polys


def raster(polys, height, width):
    if not polys:
        return np.zeros((height, width), np.uint8)
    rles = mask_utils.frPyObjects([p.tolist() for p in polys], height, width)
    return mask_utils.decode(mask_utils.merge(rles))


def sample(record, scale, flipped):
    h, w = round(record["height"] * scale), round(record["width"] * scale)
    return ImageSample(boxes=np.asarray(record["boxes"], np.float32) * scale,
                       classes=np.asarray(record["classes"], np.int32),
                       crowd_boxes=np.zeros((0, 4), np.float32),
                       im_info=np.array([h, w, scale], np.float32), bucket=(64, 96),
                       flipped=flipped, record=record)


RECORD = {"image_id": 1, "height": 30, "width": 40,
          "boxes": [[2, 3, 20, 18], [25, 5, 35, 25], [0, 0, 5, 5]], "classes": [1, 2, 1],
          "segmentations": [[[2, 3, 21, 3, 21, 19, 2, 19]],
                            [[25, 5, 36, 5, 30, 26], [33, 20, 35, 20, 35, 22]],
                            []]}


@pytest.mark.parametrize("flipped", [False, True])
def test_rows_are_the_resized_and_mirrored_polygons(flipped):
    assigner = GtPolygonAssigner(max_gt=5, poly_len=40)
    out = {"gt_polys": np.full((5, 40), 7, np.float32)}  # stale memory must be overwritten
    item = sample(RECORD, 1.5, flipped)
    assigner.assign(item, np.random.default_rng(0), out)
    rows = out["gt_polys"]
    width = item.im_info[1]
    for j, segmentation in enumerate(RECORD["segmentations"]):
        got = decode_row(rows[j])
        assert len(got) == len(segmentation)
        for poly, original in zip(got, segmentation):
            expected = np.asarray(original, np.float64) * 1.5
            if flipped:
                expected[0::2] = width - expected[0::2]
            np.testing.assert_allclose(poly, expected, rtol=1e-6)
    assert rows[2, 0] == 0  # an object without polygons: no mask target
    assert (rows[3:] == -1).all()  # padding rows


def test_rows_stop_at_max_gt_like_gt_boxes():
    out = {"gt_polys": np.zeros((2, 40), np.float32)}
    GtPolygonAssigner(max_gt=2, poly_len=40).assign(sample(RECORD, 1.0, False),
                                                    np.random.default_rng(0), out)
    assert [len(decode_row(r)) for r in out["gt_polys"]] == [1, 2]


def test_records_without_segmentations_give_rows_without_polygons():
    record = dict(RECORD, segmentations=[])
    out = {"gt_polys": np.zeros((4, 16), np.float32)}
    GtPolygonAssigner(max_gt=4, poly_len=16).assign(sample(record, 1.0, False),
                                                    np.random.default_rng(0), out)
    assert (out["gt_polys"][:3, 0] == 0).all() and (out["gt_polys"][3] == -1).all()


def test_rle_objects_become_their_outer_contours():
    mask = np.zeros((30, 40), np.uint8)
    mask[5:20, 8:30] = 1
    mask[22:27, 2:6] = 1
    rle = mask_utils.encode(np.asfortranarray(mask))
    polys = [np.asarray(p) for p in rle_to_polygons(rle)]
    assert len(polys) == 2
    back = raster(polys, 30, 40)
    iou = (back & mask).sum() / (back | mask).sum()
    assert iou > 0.8, iou
    scaled = input_polygons(rle, 2.0)
    assert np.isclose(max(p[0::2].max() for p in scaled), 2 * max(p[0::2].max() for p in polys))


def test_assigner_pickles_and_declares_its_output():
    assigner = pickle.loads(pickle.dumps(GtPolygonAssigner(max_gt=7, poly_len=33)))
    assert assigner.outputs(64, 96) == {"gt_polys": ((7, 33), np.float32)}
    assert assigner.names == ("gt_polys",)


def test_loader_polygons_cover_the_objects_pixels(tmp_path):
    """Objects painted white on black: after the loader's resize (non-unit, both
    orientations) and random flip, each row's polygons rasterise onto the white pixels."""
    rng = np.random.default_rng(5)
    records = []
    for i, (height, width) in enumerate([(50, 70), (70, 50), (45, 80), (80, 45)]):
        x0, y0 = rng.uniform(5, 15, 2)
        poly = [x0, y0, x0 + 25, y0 + 3, x0 + 18, y0 + 28, x0 + 2, y0 + 20]
        image = np.zeros((height, width, 3), np.uint8)
        image[raster([np.asarray(poly)], height, width).astype(bool)] = 255
        path = os.path.join(str(tmp_path), f"{i}.png")
        cv2.imwrite(path, image)
        xs, ys = poly[0::2], poly[1::2]
        records.append({"image_id": i, "file_name": path, "height": height, "width": width,
                        "boxes": np.array([[min(xs), min(ys), max(xs) - 1, max(ys) - 1]],
                                          np.float32),
                        "classes": np.ones(1, np.int32), "segmentations": [[poly]]})
    loader = DetectionLoader(records, batch_size=2, short_sides=(72,), long_side=120,
                             mean=(0, 0, 0), std=(1, 1, 1), flip=True, max_gt=3,
                             assigners=[GtPolygonAssigner(3, 32)], num_workers=0, seed=11,
                             for_training=True)
    ious = []
    for _ in range(3):  # several epochs: both flip outcomes
        for batch in loader:
            for slot in range(len(batch["data"])):
                height, width = (int(v) for v in batch["im_info"][slot, :2])
                white = batch["data"][slot, 0, :height, :width] > 127
                polys = decode_row(batch["gt_polys"][slot, 0])
                drawn = raster(polys, height, width).astype(bool)
                ious.append((drawn & white).sum() / (drawn | white).sum())
                assert (batch["gt_polys"][slot, 1:] == -1).all()
    assert len(ious) >= 8 and min(ious) > 0.85, ious
