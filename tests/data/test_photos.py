"""The photos fixture: real photographs with hand-drawn boxes, built offline and deterministic;
portrait and landscape, non-unit resize scales, non-contiguous category ids, many boxes per
image, a crowd region; records, config selection, and an exact loader round trip on it."""
import functools
import json
import math
import os
import socket
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from simpledet.config import ConfigError, load_config
from simpledet.data import loader as loader_module
from simpledet.data import photos, transforms
from simpledet.data.coco import CocoDataset, DatasetError
from simpledet.data.loader import DetectionLoader
from simpledet.data.photos import CATEGORY_IDS, CLASS_NAMES, ensure_photos_dataset
from simpledet.data.transforms import bucket_shape, resize_scale
from simpledet.engine.build import build_dataset, check_dataset_files, prepare_dataset

ROOT = Path(__file__).resolve().parents[2]
SHAPES_FPN = ROOT / "config/shapes/faster_fpn.py"
QUICKSTART = (256, 320)  # input.short / input.long of config/_base/shapes.py
INPUT_SIZES = (QUICKSTART, (320, 480))
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


@pytest.fixture
def no_network(monkeypatch):
    """Any connection attempt fails the test: the dataset must build offline."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return ensure_photos_dataset(tmp_path_factory.mktemp("photos") / "ds")


@pytest.fixture(scope="module")
def train_json(dataset):
    with open(dataset.train[0]) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def coco(dataset):
    return CocoDataset(*dataset.train, for_training=True)


def tree_bytes(root):
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def rgb(path):
    image = cv2.imread(str(path), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    return np.ascontiguousarray(image[:, :, ::-1])


# --- building -------------------------------------------------------------------------------

def test_builds_offline_byte_identical_and_only_once(tmp_path, monkeypatch, no_network):
    first = ensure_photos_dataset(tmp_path / "a")
    second = ensure_photos_dataset(tmp_path / "b")
    files = tree_bytes(first.root)
    assert files == tree_bytes(second.root)
    assert {p for p in files if p.startswith("images")} == {
        os.path.join("images", split, photo.file_name)
        for split in photos.SPLITS for photo in photos.PHOTOS}

    def must_not_build(root):
        raise AssertionError("rebuilt an up-to-date dataset")

    monkeypatch.setattr(photos, "write_dataset", must_not_build)
    assert ensure_photos_dataset(tmp_path / "a") == first


def test_a_new_content_version_replaces_the_old_build(tmp_path, monkeypatch):
    root = tmp_path / "ds"
    ensure_photos_dataset(root)
    (root / "images" / "train" / "stale.png").write_bytes(b"left over")
    monkeypatch.setattr(photos, "CONTENT_VERSION", photos.CONTENT_VERSION + 1)
    paths = ensure_photos_dataset(root)
    assert paths.params["content_version"] == photos.CONTENT_VERSION
    with open(root / "params.json") as f:
        assert json.load(f) == paths.params
    assert not (root / "images" / "train" / "stale.png").exists()
    assert sorted(os.listdir(tmp_path)) == ["ds"]  # no temporary folder left behind


def test_refuses_a_folder_that_is_not_a_photos_dataset(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a photos dataset"):
        ensure_photos_dataset(tmp_path)


def test_missing_package_names_the_pip_install(monkeypatch):
    monkeypatch.setattr(photos.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DatasetError) as info:
        photos.source_path(photos.PHOTOS[0])
    assert "pip install scikit-image" in str(info.value) and "\n" not in str(info.value)


def test_another_version_of_a_photo_is_refused(monkeypatch):
    coins = photos.source_path(photos.PHOTOS[4])
    monkeypatch.setattr(photos, "source_path", lambda photo: coins)
    with pytest.raises(DatasetError, match="sha1"):
        photos.photo_bytes(photos.PHOTOS[0])


def test_pixels_are_the_packages_pixels(dataset):
    image_dir = dataset.train[1]
    for photo in photos.PHOTOS:
        stored = cv2.imread(os.path.join(image_dir, photo.file_name), cv2.IMREAD_UNCHANGED)
        source = cv2.imread(photos.source_path(photo), cv2.IMREAD_UNCHANGED)
        if photo.turn_clockwise:
            source = np.ascontiguousarray(np.rot90(source, -1))
        np.testing.assert_array_equal(stored, source, err_msg=photo.file_name)


def test_turned_photo_keeps_its_boxes_on_the_same_pixels(dataset, train_json):
    photo = next(p for p in photos.PHOTOS if p.turn_clockwise)
    source = rgb(photos.source_path(photo))
    turned = rgb(os.path.join(dataset.train[1], photo.file_name))
    annotations = [a for a in train_json["annotations"] if a["image_id"] == photo.image_id]
    assert len(annotations) == len(photo.objects)
    for (_, (x, y, w, h), _), ann in zip(photo.objects, annotations):
        tx, ty, tw, th = ann["bbox"]
        np.testing.assert_array_equal(turned[ty:ty + th, tx:tx + tw],
                                      np.rot90(source[y:y + h, x:x + w], -1))


def test_coin_boxes_are_what_thresholding_finds():
    photo = next(p for p in photos.PHOTOS if p.file_name == "coins.png")
    found = photos.threshold_coin_boxes(cv2.imread(photos.source_path(photo),
                                                   cv2.IMREAD_GRAYSCALE))
    assert len(found) == len(photos.COIN_BOXES)
    np.testing.assert_allclose(found, photos.COIN_BOXES, atol=1)


# --- what the json holds --------------------------------------------------------------------

def test_breaks_the_symmetries_of_shapes(train_json):
    images = train_json["images"]
    sizes = [(img["height"], img["width"]) for img in images]
    assert sum(h > w for h, w in sizes) >= 2 and sum(w > h for h, w in sizes) >= 2
    assert (256, 320) not in sizes and max(max(s) for s in sizes) > 600
    for short, long in INPUT_SIZES:
        assert all(resize_scale(h, w, short, long) != 1 for h, w in sizes)
    assert [img["id"] for img in images] != list(range(1, len(images) + 1))

    ids = [c["id"] for c in train_json["categories"]]
    assert ids != sorted(ids)  # the json lists them out of order
    assert sorted(ids) != list(range(1, len(ids) + 1))  # and they are not 1..K
    assert tuple(c["name"] for c in sorted(train_json["categories"], key=lambda c: c["id"])) \
        == CLASS_NAMES
    assert {a["category_id"] for a in train_json["annotations"] if not a["iscrowd"]} == set(ids)

    per_image = Counter(a["image_id"] for a in train_json["annotations"] if not a["iscrowd"])
    assert set(per_image) == {img["id"] for img in images}
    assert max(per_image.values()) >= 20 and min(per_image.values()) == 1


def test_annotations_are_consistent(train_json):
    sizes = {img["id"]: (img["height"], img["width"]) for img in train_json["images"]}
    assert len({a["id"] for a in train_json["annotations"]}) == len(train_json["annotations"])
    crowds = [a for a in train_json["annotations"] if a["iscrowd"]]
    assert len(crowds) == 1
    for ann in train_json["annotations"]:
        height, width = sizes[ann["image_id"]]
        x, y, w, h = ann["bbox"]
        assert 0 <= x and 0 <= y and x + w <= width and y + h <= height and w >= 1 and h >= 1
        if ann["iscrowd"]:
            rle = ann["segmentation"]
            assert isinstance(rle["counts"], list) and rle["size"] == [height, width]
            mask = mask_utils.decode(mask_utils.frPyObjects(rle, height, width))
            rows, cols = np.nonzero(mask)
            assert [cols.min(), rows.min(), cols.ptp() + 1, rows.ptp() + 1] == ann["bbox"]
            assert mask.sum() == ann["area"]
            continue
        assert ann["iscrowd"] == 0 and len(ann["segmentation"]) == 1
        points = np.reshape(ann["segmentation"][0], (-1, 2))
        assert len(points) >= 4
        # the polygon spans its box exactly (a COCO box is the extent of the object's mask)
        np.testing.assert_allclose([*points.min(0), *(points.max(0) - points.min(0))],
                                   ann["bbox"], atol=1e-9)
        rle = mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], height, width))
        assert ann["area"] == mask_utils.area(rle) and 0 < ann["area"] <= w * h


# --- records and config ----------------------------------------------------------------------

def test_coco_dataset_maps_category_ids_both_ways(coco, train_json):
    assert tuple(coco.class_names) == CLASS_NAMES and coco.num_classes == len(CATEGORY_IDS)
    assert len(coco) == len(photos.PHOTOS) and coco.stats["degenerate_boxes"] == 0
    for label, cat_id in coco.label_to_cat_id.items():
        assert coco.cat_id_to_label[cat_id] == label
        assert CATEGORY_IDS[CLASS_NAMES[label - 1]] == cat_id
    assert sorted(coco.cat_id_to_label) == sorted(CATEGORY_IDS.values())
    for record in coco.records:
        anns = [a for a in train_json["annotations"] if a["image_id"] == record["image_id"]]
        plain = [a for a in anns if not a["iscrowd"]]
        assert [coco.label_to_cat_id[int(c)] for c in record["classes"]] == \
            [a["category_id"] for a in plain]
        expected = [[x, y, x + w - 1, y + h - 1] for x, y, w, h in (a["bbox"] for a in plain)]
        np.testing.assert_array_equal(record["boxes"], np.float32(expected).reshape(-1, 4))
        assert len(record["crowd_boxes"]) == len(anns) - len(plain)
    assert sum(len(r["crowd_boxes"]) for r in coco.records) == 1


def test_a_config_selects_it_and_shapes_is_unchanged(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMPLEDET_CACHE_DIR", str(tmp_path))
    shapes_cfg = load_config(SHAPES_FPN)
    assert os.path.basename(os.path.dirname(os.path.dirname(
        shapes_cfg.dataset.train_annotations))).startswith("shapes-")
    cfg = load_config(SHAPES_FPN, ["dataset.synthetic=photos",
                                   f"dataset.class_names={list(CLASS_NAMES)!r}"])
    assert cfg.dataset.train_annotations.startswith(os.path.join(str(tmp_path), "photos-"))
    assert not os.path.exists(cfg.dataset.train_annotations)  # reading the config writes nothing
    messages = []
    root = prepare_dataset(cfg, log=messages.append)
    assert len(messages) == 1 and "first use" in messages[0]
    for split in ("train", "val"):
        check_dataset_files(cfg, split)
    assert prepare_dataset(cfg, log=messages.append) == root and len(messages) == 1
    assert len(build_dataset(cfg, "val", for_training=False)) == len(photos.PHOTOS)
    with pytest.raises(ConfigError, match="synthetic_train"):
        load_config(SHAPES_FPN, ["dataset.synthetic=photos", "dataset.synthetic_train=3"])


# --- the loader, exactly ---------------------------------------------------------------------

def load_one(record, monkeypatch, flip, short, long):
    """The training loader's batch of one record, with the random flip forced on or off."""
    monkeypatch.setattr(loader_module, "random_flip",
                        functools.partial(transforms.random_flip, prob=1.0 if flip else 0.0))
    loader = DetectionLoader([record], batch_size=1, short_sides=(short,), long_side=long,
                             mean=MEAN, std=STD, flip=True, max_gt=100,
                             num_workers=0, shuffle=False, for_training=True)
    (batch,) = list(loader)
    return batch


def original_coordinates(gt, im_info, flipped):
    """Batch gt boxes (N, 4) back to the original image: unflip in the resized width, then
    invert the resize of the pixel spans ("+1" box [x1, x2] covers [x1, x2 + 1))."""
    height, width, scale = (np.float64(v) for v in im_info)
    boxes = gt.astype(np.float64)
    if flipped:
        boxes = np.stack([width - 1 - boxes[:, 2], boxes[:, 1], width - 1 - boxes[:, 0],
                          boxes[:, 3]], axis=1)
    return np.concatenate([boxes[:, :2] / scale, (boxes[:, 2:] + 1) / scale - 1], axis=1)


@pytest.mark.parametrize("short,long", INPUT_SIZES)
@pytest.mark.parametrize("flip", [False, True], ids=["unflipped", "flipped"])
def test_loader_round_trip_is_exact(coco, monkeypatch, flip, short, long):
    orientations = set()
    for record in coco.records:
        height, width = record["height"], record["width"]
        batch = load_one(record, monkeypatch, flip, short, long)
        scale = resize_scale(height, width, short, long)
        new_h, new_w = round(height * scale), round(width * scale)
        np.testing.assert_array_equal(batch["im_info"][0], np.float32([new_h, new_w, scale]))
        assert batch["data"].shape[2:] == bucket_shape(height, width, short, long, 32)
        orientations.add(batch["data"].shape[2] > batch["data"].shape[3])
        count = len(record["boxes"])
        gt = batch["gt_boxes"][0]
        np.testing.assert_array_equal(gt[:count, 4], record["classes"])
        assert (gt[count:] == -1).all()

        back = original_coordinates(gt[:count, :4], batch["im_info"][0], flip)
        # Exact but where the box was clipped to the resized image: a box reaching the last
        # row/column of a photo whose resized size was rounded down (W * s > round(W * s))
        # comes back at most 0.5 / s pixels short, and only there.
        spans = np.concatenate([record["boxes"][:, :2] * np.float32(scale),
                                (record["boxes"][:, 2:] + 1) * np.float32(scale) - 1], axis=1)
        clipped = spans > np.float32([new_w - 1, new_h - 1] * 2) + 1e-4
        last_pixel = np.broadcast_to(np.float32([width - 1, height - 1] * 2), spans.shape)
        np.testing.assert_array_equal(record["boxes"][clipped], last_pixel[clipped])
        np.testing.assert_allclose(back[~clipped], record["boxes"][~clipped], rtol=0, atol=1e-3,
                                   err_msg=f"{record['file_name']} flip={flip}")
        assert (np.abs(back - record["boxes"])[clipped] <= 0.5 / scale + 1e-3).all()

        # The pixels inside each gt box are those of the same box in the resized photo.
        data = batch["data"][0].transpose(1, 2, 0) * np.float32(STD) + np.float32(MEAN)
        assert not batch["data"][0][:, new_h:].any() and not batch["data"][0][:, :, new_w:].any()
        reference = cv2.resize(rgb(record["file_name"]), (new_w, new_h),
                               interpolation=cv2.INTER_LINEAR).astype(np.float32)
        mirrored_differs = False
        for (gx1, gy1, gx2, gy2), box in zip(gt[:count, :4], spans):
            cols = math.ceil(gx1 - 1e-3), math.floor(gx2 + 1e-3)
            rows = math.ceil(gy1 - 1e-3), math.floor(gy2 + 1e-3)
            ref_cols = (math.ceil(box[0] - 1e-3), min(math.floor(box[2] + 1e-3), new_w - 1))
            assert (rows[0], rows[1]) == (math.ceil(box[1] - 1e-3),
                                          min(math.floor(box[3] + 1e-3), new_h - 1))
            assert cols == ((new_w - 1 - ref_cols[1], new_w - 1 - ref_cols[0]) if flip
                            else ref_cols)
            got = data[rows[0]:rows[1] + 1, cols[0]:cols[1] + 1]
            want = reference[rows[0]:rows[1] + 1, ref_cols[0]:ref_cols[1] + 1]
            if flip:
                mirrored_differs |= bool(np.abs(got - want).max() > 10)
                want = want[:, ::-1]
            np.testing.assert_allclose(got, want, rtol=0, atol=0.01,
                                       err_msg=f"{record['file_name']} box {box} flip={flip}")
        assert mirrored_differs or not flip  # the check would see a box/image mismatch
    assert orientations == {True, False}
