"""Synthetic shapes: determinism, label statistics, masks vs boxes, safe generation."""
import json
import os
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from simpledet.data import shapes
from simpledet.data.coco import CocoDataset, DatasetError
from simpledet.data.shapes import CLASS_NAMES, ensure_shapes_dataset, write_split

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = (128, 160)  # small images keep the tests fast; the default is shapes.DEFAULT_SIZE


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes") / "ds"
    return ensure_shapes_dataset(root, train=24, val=4, seed=0, size=SIZE)


@pytest.fixture(scope="module")
def train_json(dataset):
    with open(dataset.train[0]) as f:
        return json.load(f)


def json_bytes(tmp_path, name, seed):
    ann_file = write_split(str(tmp_path / name), "val", 6, seed=seed, size=SIZE,
                           image_format="png")
    with open(ann_file, "rb") as f:
        return f.read()


def test_same_seed_gives_byte_identical_json(tmp_path):
    first = json_bytes(tmp_path, "a", seed=3)
    assert first == json_bytes(tmp_path, "b", seed=3)
    assert first != json_bytes(tmp_path, "c", seed=4)


def test_layout_and_categories(dataset, train_json):
    for split, count in (("train", 24), ("val", 4)):
        ann_file, image_dir = dataset.split(split)
        assert ann_file == os.path.join(dataset.root, "annotations", f"instances_{split}.json")
        assert len(os.listdir(image_dir)) == count
    assert [c["name"] for c in train_json["categories"]] == list(CLASS_NAMES)
    assert len(CLASS_NAMES) >= 5
    used = {a["category_id"] for a in train_json["annotations"]}
    assert used == {c["id"] for c in train_json["categories"]}


def test_instances_per_image_within_1_to_10(train_json):
    per_image = Counter(a["image_id"] for a in train_json["annotations"])
    assert set(per_image) == {img["id"] for img in train_json["images"]}  # none empty
    assert 1 <= min(per_image.values()) and max(per_image.values()) <= 10
    assert len(set(per_image.values())) >= 4  # counts vary


def test_areas_cover_coco_small_medium_large():
    # at the default image size, where the buckets are defined
    areas = []
    for index in range(12):
        _, instances = shapes.render_image(shapes._image_rng(0, "train", index),
                                           *shapes.DEFAULT_SIZE)
        areas += [inst["area"] for inst in instances]
    areas = np.asarray(areas)
    assert (areas < 32 ** 2).sum() >= 3
    assert ((areas >= 32 ** 2) & (areas < 96 ** 2)).sum() >= 3
    assert (areas >= 96 ** 2).sum() >= 2


def test_aspect_ratios_vary(train_json):
    ratios = np.asarray([a["bbox"][2] / a["bbox"][3] for a in train_json["annotations"]])
    assert ratios.min() < 0.6 and ratios.max() > 1.7


def test_masks_match_boxes_and_areas(train_json):
    for ann in train_json["annotations"]:
        assert ann["iscrowd"] == 0
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], *SIZE))
        mask = mask_utils.decode(rle)
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann["bbox"]
        assert (xs.min(), ys.min(), xs.max(), ys.max()) == (x, y, x + w - 1, y + h - 1)
        assert ann["area"] == mask.sum()
        assert 0 <= x and x + w <= SIZE[1] and 0 <= y and y + h <= SIZE[0]


def test_no_label_more_than_70_percent_hidden(train_json):
    by_image = {}
    for ann in train_json["annotations"]:  # in drawing order
        by_image.setdefault(ann["image_id"], []).append(ann)
    for anns in by_image.values():
        masks = [mask_utils.decode(mask_utils.merge(
            mask_utils.frPyObjects(a["segmentation"], *SIZE))).astype(bool) for a in anns]
        owner = np.full(SIZE, -1)
        for i, mask in enumerate(masks):
            owner[mask] = i
        for i, mask in enumerate(masks):
            assert (owner[mask] == i).mean() >= 1 - shapes.MAX_OCCLUDED


def test_shapes_painted_where_labelled(dataset, train_json):
    # The last instance of an image is fully visible: its pixels differ from the ring around it.
    import cv2

    ann = [a for a in train_json["annotations"] if a["image_id"] == 1][-1]
    image = cv2.imread(os.path.join(dataset.train[1], "000001.jpg")).astype(np.float32)
    mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], *SIZE)))
    ring = cv2.dilate(mask, np.ones((7, 7), np.uint8)) - mask
    inside = image[cv2.erode(mask, np.ones((3, 3), np.uint8)) > 0].mean(0)
    assert np.abs(inside - image[ring > 0].mean(0)).sum() > 30


def test_loads_as_coco_dataset(dataset):
    ds = CocoDataset(*dataset.train, cache_dir=os.path.join(dataset.root, "cache"))
    assert len(ds.records) == 24 and ds.num_classes == len(CLASS_NAMES)
    assert ds.stats["degenerate_boxes"] == 0
    ds.check_images()  # every image decodes at the size the json says


def test_second_call_reuses_dataset(dataset):
    ann_file = dataset.train[0]
    mtime = os.stat(ann_file).st_mtime_ns
    again = ensure_shapes_dataset(dataset.root, train=24, val=4, seed=0, size=SIZE)
    assert again == dataset and os.stat(ann_file).st_mtime_ns == mtime


def test_other_params_in_same_folder_refused(dataset):
    with pytest.raises(DatasetError, match="other parameters.*'seed': \\(0, 1\\)"):
        ensure_shapes_dataset(dataset.root, train=24, val=4, seed=1, size=SIZE)


def test_half_written_folder_is_not_taken_as_complete(tmp_path):
    root = tmp_path / "ds"
    (root / "annotations").mkdir(parents=True)
    with pytest.raises(DatasetError, match="not a complete shapes dataset"):
        ensure_shapes_dataset(root, train=1, val=1, size=SIZE)


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    real_write_split = shapes.write_split

    def fail_on_val(root, split, *args, **kwargs):
        if split == "val":
            raise RuntimeError("killed")
        return real_write_split(root, split, *args, **kwargs)

    monkeypatch.setattr(shapes, "write_split", fail_on_val)
    with pytest.raises(RuntimeError):
        ensure_shapes_dataset(tmp_path / "ds", train=2, val=1, size=SIZE)
    assert os.listdir(tmp_path) == []  # neither the dataset nor its temp folder


def test_default_root_is_a_params_hash_in_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMPLEDET_CACHE_DIR", str(tmp_path))
    paths = ensure_shapes_dataset(train=1, val=1, seed=5, size=SIZE)
    assert os.path.dirname(paths.root) == str(tmp_path)
    assert os.path.basename(paths.root).startswith("shapes-")
    other = ensure_shapes_dataset(train=1, val=1, seed=6, size=SIZE)
    assert other.root != paths.root
    assert sorted(os.listdir(tmp_path)) == sorted([os.path.basename(paths.root),
                                                   os.path.basename(other.root)])


def test_bad_parameters():
    with pytest.raises(ValueError, match="image_format"):
        ensure_shapes_dataset("unused", image_format="bmp")
    with pytest.raises(ValueError, match="at least 64x64"):
        ensure_shapes_dataset("unused", size=(32, 320))


def test_cli(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, os.path.join(REPO, "scripts", "make_shapes.py"), "--out", str(out),
           "--train", "2", "--val", "1", "--seed", "7", "--size", "96x128", "--format", "png"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(os.listdir(out / "images" / "train")) == ["000001.png", "000002.png"]
    with open(out / "annotations" / "instances_val.json") as f:
        assert json.load(f)["images"][0]["height"] == 96
    bad = subprocess.run(cmd[:-6] + ["--size", "96by128"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and "expected HxW" in bad.stderr
