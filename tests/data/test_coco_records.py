"""COCO json -> records: label mapping, crowd/degenerate handling, caching, bad input."""
import json
import logging
import os

import cv2
import numpy as np
import pytest

from simpledet.data.coco import CocoDataset, DatasetError, coco_paths, read_image

RLE = {"size": [40, 60], "counts": "PPYo0"}


def tiny_coco():
    """4 images: boxes + crowd + degenerate; nothing; crowd only; a box crossing the border."""
    return {
        "images": [{"id": 10, "file_name": "a.jpg", "height": 40, "width": 60},
                   {"id": 11, "file_name": "b.jpg", "height": 40, "width": 60},
                   {"id": 12, "file_name": "c.png", "height": 40, "width": 60},
                   {"id": 13, "file_name": "d.png", "height": 40, "width": 60}],
        # unsorted, non-contiguous ids: labels follow the sorted ids 1, 3, 7
        "categories": [{"id": 7, "name": "seven"}, {"id": 1, "name": "one"},
                       {"id": 3, "name": "three"}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 7, "bbox": [2, 3, 10, 5], "iscrowd": 0,
             "segmentation": [[2, 3, 11, 3, 11, 7, 2, 7]], "area": 50},
            {"id": 2, "image_id": 10, "category_id": 1, "bbox": [20.5, 4, 8, 8], "iscrowd": 0,
             "segmentation": RLE, "area": 64},
            {"id": 3, "image_id": 10, "category_id": 3, "bbox": [0, 0, 30, 20], "iscrowd": 1,
             "segmentation": RLE, "area": 600},
            {"id": 4, "image_id": 10, "category_id": 3, "bbox": [5, 5, 0.5, 9], "iscrowd": 0,
             "segmentation": [], "area": 0},
            {"id": 5, "image_id": 12, "category_id": 1, "bbox": [1, 1, 10, 10], "iscrowd": 1,
             "segmentation": RLE, "area": 100},
            {"id": 6, "image_id": 13, "category_id": 3, "bbox": [50, 30, 20, 20], "iscrowd": 0,
             "segmentation": [[50, 30, 69, 30, 69, 49]], "area": 200},
        ],
    }


def write_json(path, content):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(content, f)
    return str(path)


def write_images(image_dir, content):
    os.makedirs(image_dir, exist_ok=True)
    for img in content["images"]:
        pixels = np.full((img["height"], img["width"], 3), (10, 20, 30), np.uint8)
        cv2.imwrite(os.path.join(image_dir, img["file_name"]), pixels)


@pytest.fixture
def coco_dir(tmp_path):
    ann_file, image_dir = coco_paths(tmp_path, "mini")
    write_json(ann_file, tiny_coco())
    write_images(image_dir, tiny_coco())
    return ann_file, image_dir


def by_id(dataset):
    return {r["image_id"]: r for r in dataset.records}


def test_coco_paths_layout(tmp_path):
    ann_file, image_dir = coco_paths(tmp_path, "val2017")
    assert ann_file == str(tmp_path / "annotations" / "instances_val2017.json")
    assert image_dir == str(tmp_path / "images" / "val2017")


def test_label_mapping_both_ways(coco_dir):
    ds = CocoDataset(*coco_dir)
    assert ds.cat_id_to_label == {1: 1, 3: 2, 7: 3}
    assert ds.label_to_cat_id == {1: 1, 2: 3, 3: 7}
    assert ds.class_names == ["one", "three", "seven"]
    assert ds.num_classes == 3
    rec = by_id(ds)[10]
    assert rec["classes"].dtype == np.int32
    assert rec["classes"].tolist() == [3, 1]  # category 7 then 1
    assert [ds.class_names[label - 1] for label in rec["classes"]] == ["seven", "one"]


def test_record_fields_and_plus_one_boxes(coco_dir):
    ds = CocoDataset(*coco_dir)
    rec = by_id(ds)[10]
    assert rec["file_name"] == os.path.join(coco_dir[1], "a.jpg")
    assert (rec["height"], rec["width"], rec["flipped"]) == (40, 60, False)
    assert rec["boxes"].dtype == np.float32 and rec["boxes"].shape == (2, 4)
    # [x, y, w, h] -> [x, y, x + w - 1, y + h - 1]
    np.testing.assert_allclose(rec["boxes"], [[2, 3, 11, 7], [20.5, 4, 27.5, 11]])
    # a box crossing the border is clipped to the last pixel
    np.testing.assert_allclose(by_id(ds)[13]["boxes"], [[50, 30, 59, 39]])


def test_crowd_kept_as_ignore_region(coco_dir):
    ds = CocoDataset(*coco_dir, for_training=False)
    rec = by_id(ds)[10]
    assert rec["crowd_boxes"].dtype == np.float32
    np.testing.assert_allclose(rec["crowd_boxes"], [[0, 0, 29, 19]])
    assert len(rec["boxes"]) == 2  # crowd is not a training box
    assert by_id(ds)[11]["crowd_boxes"].shape == (0, 4)
    assert ds.stats["crowd_boxes"] == 2


def test_degenerate_box_dropped_and_counted(coco_dir, caplog):
    with caplog.at_level(logging.WARNING, logger="simpledet.data.coco"):
        ds = CocoDataset(*coco_dir)
    assert ds.stats["degenerate_boxes"] == 1
    # annotation 4 (category 3 = label 2) is gone, the other two boxes of image 10 stay
    assert by_id(ds)[10]["classes"].tolist() == [3, 1]
    assert "dropped 1 degenerate box" in caplog.text and "[4]" in caplog.text


def test_polygons_and_rle_kept(coco_dir):
    rec = by_id(CocoDataset(*coco_dir))[10]
    assert rec["segmentations"] == [[[2, 3, 11, 3, 11, 7, 2, 7]], RLE]
    assert len(rec["segmentations"]) == len(rec["boxes"])


def test_empty_images_excluded_for_training_kept_for_test(coco_dir, caplog):
    with caplog.at_level(logging.INFO, logger="simpledet.data.coco"):
        train = CocoDataset(*coco_dir, for_training=True)
    assert sorted(by_id(train)) == [10, 13]  # 11 has nothing, 12 only a crowd box
    assert train.stats["excluded_images"] == 2
    assert "excluded 2 image(s)" in caplog.text
    test = CocoDataset(*coco_dir, for_training=False)
    assert sorted(by_id(test)) == [10, 11, 12, 13]
    assert test.stats["excluded_images"] == 0 and test.stats["images_without_boxes"] == 2
    assert by_id(test)[11]["boxes"].shape == (0, 4)
    assert by_id(test)[11]["classes"].shape == (0,)


def test_cache_reused_then_rebuilt_after_json_edit(coco_dir):
    ann_file, image_dir = coco_dir
    first = CocoDataset(ann_file, image_dir)
    assert not first.loaded_from_cache
    assert os.path.isfile(first.cache_file)
    assert os.path.dirname(first.cache_file) == os.path.join(os.path.dirname(ann_file), ".cache")
    second = CocoDataset(ann_file, image_dir)
    assert second.loaded_from_cache
    np.testing.assert_array_equal(second.records[0]["boxes"], first.records[0]["boxes"])

    edited = tiny_coco()
    edited["annotations"][0]["bbox"] = [4, 3, 10, 5]
    write_json(ann_file, edited)
    third = CocoDataset(ann_file, image_dir)
    assert not third.loaded_from_cache
    np.testing.assert_allclose(by_id(third)[10]["boxes"][0], [4, 3, 13, 7])


def test_cache_in_user_dir_and_corrupt_cache_rebuilt(coco_dir, tmp_path):
    cache_dir = tmp_path / "my_cache"
    ds = CocoDataset(*coco_dir, cache_dir=cache_dir)
    assert os.path.dirname(ds.cache_file) == str(cache_dir)
    with open(ds.cache_file, "wb") as f:
        f.write(b"not a pickle")
    again = CocoDataset(*coco_dir, cache_dir=cache_dir)
    assert not again.loaded_from_cache and len(again.records) == len(ds.records)
    assert CocoDataset(*coco_dir, cache_dir=cache_dir).loaded_from_cache


# ----------------------------------------------------------------------------- bad input

def test_missing_annotation_file_names_path_and_layout(tmp_path):
    ann_file, image_dir = coco_paths(tmp_path, "train2017")
    with pytest.raises(DatasetError) as err:
        CocoDataset(ann_file, image_dir)
    assert ann_file in str(err.value)
    assert "annotations/instances_<split>.json" in str(err.value)
    assert "images/<split>" in str(err.value)


def test_malformed_json_names_file_and_position(tmp_path):
    ann_file = tmp_path / "instances_bad.json"
    ann_file.write_text('{"images": [\n  {"id": 1,, }]}')
    with pytest.raises(DatasetError) as err:
        CocoDataset(ann_file, tmp_path)
    message = str(err.value)
    assert str(ann_file) in message and "malformed" in message
    assert "line 2 column" in message


def test_annotation_file_without_images(tmp_path):
    content = tiny_coco()
    content["images"] = []
    ann_file = write_json(tmp_path / "instances_empty.json", content)
    with pytest.raises(DatasetError, match="no images") as err:
        CocoDataset(ann_file, tmp_path)
    assert ann_file in str(err.value)


def test_annotation_pointing_at_unknown_image_or_category(tmp_path):
    content = tiny_coco()
    content["annotations"][1]["image_id"] = 99
    ann_file = write_json(tmp_path / "instances_x.json", content)
    with pytest.raises(DatasetError, match=r"annotations\[1\] \(id 2\): image_id 99"):
        CocoDataset(ann_file, tmp_path)
    content = tiny_coco()
    content["annotations"][0]["category_id"] = 42
    write_json(ann_file, content)
    with pytest.raises(DatasetError, match="category_id 42"):
        CocoDataset(ann_file, tmp_path)


def test_image_entry_missing_key(tmp_path):
    content = tiny_coco()
    del content["images"][2]["height"]
    ann_file = write_json(tmp_path / "instances_x.json", content)
    with pytest.raises(DatasetError, match=r"images\[2\]: missing key\(s\) \['height'\]"):
        CocoDataset(ann_file, tmp_path)


def test_read_image_returns_rgb(coco_dir):
    rec = by_id(CocoDataset(*coco_dir))[13]
    image = read_image(rec)
    assert image.shape == (40, 60, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [30, 20, 10]  # written as BGR (10, 20, 30)


def test_missing_image_file(coco_dir):
    ds = CocoDataset(*coco_dir)
    os.remove(os.path.join(coco_dir[1], "a.jpg"))
    with pytest.raises(DatasetError, match="a.jpg: image file not found"):
        read_image(by_id(ds)[10])
    with pytest.raises(DatasetError, match="a.jpg: image file not found.*skip_bad_images"):
        ds.check_images(decode=False)


def test_truncated_jpeg_detected(coco_dir):
    path = os.path.join(coco_dir[1], "a.jpg")
    pixels = np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8)
    cv2.imwrite(path, pixels)
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])
    # OpenCV alone would decode this without complaint
    assert cv2.imread(path) is not None
    ds = CocoDataset(*coco_dir)
    with pytest.raises(DatasetError, match="a.jpg: truncated JPEG"):
        read_image(by_id(ds)[10])
    with pytest.raises(DatasetError, match="1 of 2 image"):
        ds.check_images()


def test_corrupt_and_wrong_size_images(coco_dir):
    ds = CocoDataset(*coco_dir, for_training=False)
    with open(os.path.join(coco_dir[1], "b.jpg"), "wb") as f:
        f.write(b"this is not an image")
    cv2.imwrite(os.path.join(coco_dir[1], "c.png"), np.zeros((41, 60, 3), np.uint8))
    with pytest.raises(DatasetError, match="b.jpg: cannot decode image"):
        read_image(by_id(ds)[11])
    with pytest.raises(DatasetError, match=r"c.png: image is 41x60 \(HxW\) but the annotation "
                                           r"file says 40x60"):
        read_image(by_id(ds)[12])


def test_skip_bad_images_skips_and_counts(coco_dir, caplog):
    with open(os.path.join(coco_dir[1], "b.jpg"), "wb") as f:
        f.write(b"garbage")
    os.remove(os.path.join(coco_dir[1], "d.png"))
    ds = CocoDataset(*coco_dir, for_training=False, skip_bad_images=True)
    with caplog.at_level(logging.WARNING, logger="simpledet.data.coco"):
        bad = ds.check_images()
    assert len(bad) == 2 and "b.jpg" in bad[0] and "d.png" in bad[1]
    assert sorted(by_id(ds)) == [10, 12]
    assert ds.stats["bad_images"] == 2
    assert "skipped 2 unusable image(s)" in caplog.text
