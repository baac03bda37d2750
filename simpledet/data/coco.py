"""COCO-format detection datasets as *records*, one plain dict per image, cached on disk.

A record (the contract shared with transforms and the loader)::

    {"image_id": int, "file_name": str (absolute path), "height": int, "width": int,
     "boxes": float32 (N, 4) [x1, y1, x2, y2], "+1" convention (width = x2 - x1 + 1),
     "classes": int32 (N,) contiguous labels 1..K (0 is background),
     "crowd_boxes": float32 (M, 4) (iscrowd=1 annotations, kept as ignore regions),
     "segmentations": list of N entries (COCO polygon list or RLE dict, as in the json),
     "flipped": False}

COCO bbox [x, y, w, h] becomes [x, y, x + w - 1, y + h - 1], clipped to the image. Boxes with
w or h < 1 (or lying outside the image) are dropped, counted in ``CocoDataset.stats`` and named
(annotation and image ids) in a warning.
"""
import dataclasses
import hashlib
import json
import logging
import os
import pickle
import tempfile

import numpy as np

logger = logging.getLogger(__name__)

# Bump when the cached payload's layout changes, so stale caches are rebuilt.
CACHE_VERSION = 2
EXPECTED_LAYOUT = "<root>/annotations/instances_<split>.json with images in <root>/images/<split>/"
_JPEG_EOI = b"\xff\xd9"
_PNG_IEND = b"IEND"
_EXAMPLES = 5  # how many offending ids a warning or error quotes


class DatasetError(ValueError):
    """Bad dataset input. The message names the file (and record) and what was expected."""


def coco_paths(root, split):
    """The default COCO layout under ``root``.

    Args:
        root: dataset folder, e.g. ``data/coco``.
        split: e.g. ``train2017``, ``val2017``.

    Returns:
        (ann_file, image_dir): ``root/annotations/instances_<split>.json``, ``root/images/<split>``.
    """
    root = os.path.abspath(os.path.expanduser(str(root)))
    return (os.path.join(root, "annotations", f"instances_{split}.json"),
            os.path.join(root, "images", split))


@dataclasses.dataclass(frozen=True)
class DatasetPaths:
    """Where a built dataset (shapes, photos) lives, in the COCO layout of coco_paths."""
    root: str
    params: dict

    def split(self, name):
        """(ann_file, image_dir) of split ``name`` ("train" or "val")."""
        return coco_paths(self.root, name)

    @property
    def train(self):
        return self.split("train")

    @property
    def val(self):
        return self.split("val")


def load_json(path, what="JSON file"):
    """Parses a JSON file, turning I/O and syntax errors into a DatasetError naming the file.

    Args:
        path: file to read.
        what: what the file is, for the message (e.g. "annotation file").
    """
    path = str(path)
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: {what} not found")
    try:
        with open(path, "rb") as f:
            data = f.read()
        if not data.strip():
            raise DatasetError(f"{path}: {what} is empty ({len(data)} bytes); expected JSON")
        return json.loads(data.decode("utf-8"))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: malformed {what}: {e.msg} (line {e.lineno} column "
                           f"{e.colno}, char {e.pos})") from None
    except UnicodeDecodeError as e:
        raise DatasetError(f"{path}: malformed {what}: not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise DatasetError(f"{path}: cannot read {what}: {e.strerror}") from None


def file_fingerprint(path):
    """Cache key of a file: size, mtime (ns) and sha1 of its content."""
    st = os.stat(path)
    sha1 = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            sha1.update(chunk)
    return {"version": CACHE_VERSION, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
            "sha1": sha1.hexdigest()}


def decode_image_file(path, expected_hw=None):
    """Reads an image file fully, rejecting missing, corrupt and truncated files.

    OpenCV decodes a truncated JPEG silently (grey bottom rows), so JPEGs must also end with
    the end-of-image marker and PNGs with the IEND chunk.

    Args:
        path: image file.
        expected_hw: optional (height, width) the annotation file claims.

    Returns:
        uint8 (H, W, 3) RGB array.
    """
    import cv2  # lazy: records can be built without OpenCV

    if not os.path.isfile(path):
        raise DatasetError(f"{path}: image file not found")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DatasetError(f"{path}: cannot read image file: {e.strerror}") from None
    if data[:2] == b"\xff\xd8" and _JPEG_EOI not in data[-1024:]:
        raise DatasetError(f"{path}: truncated JPEG (no end-of-image marker); "
                           f"expected a complete image file")
    if data[:8] == b"\x89PNG\r\n\x1a\n" and _PNG_IEND not in data[-64:]:
        raise DatasetError(f"{path}: truncated PNG (no IEND chunk); expected a complete image file")
    # Ignore EXIF orientation: COCO's width/height describe the stored pixels.
    image = cv2.imdecode(np.frombuffer(data, np.uint8),
                         cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise DatasetError(f"{path}: cannot decode image (corrupt file or unsupported format)")
    if expected_hw is not None and tuple(image.shape[:2]) != tuple(expected_hw):
        raise DatasetError(f"{path}: image is {image.shape[0]}x{image.shape[1]} (HxW) but the "
                           f"annotation file says {expected_hw[0]}x{expected_hw[1]}")
    return image[:, :, ::-1]


def read_image(record):
    """The RGB pixels of a record's image, uint8 (height, width, 3); not flipped even if the
    record is (the loader flips). Raises DatasetError naming the file if it is missing,
    corrupt, truncated or of another size than the record says."""
    return decode_image_file(record["file_name"], (record["height"], record["width"]))


def _require(entry, keys, where):
    if not isinstance(entry, dict):
        raise DatasetError(f"{where}: expected an object with keys {list(keys)}, got {entry!r:.80}")
    missing = [k for k in keys if k not in entry]
    if missing:
        raise DatasetError(f"{where}: missing key(s) {missing}; expected {list(keys)}")


def _xywh_to_clipped_xyxy(bbox, height, width):
    """COCO [x, y, w, h] -> "+1" [x1, y1, x2, y2] clipped to the image; None if degenerate."""
    x, y, w, h = (float(v) for v in bbox)
    if not np.isfinite([x, y, w, h]).all() or w < 1 or h < 1:
        return None
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(width - 1.0, x + w - 1), min(height - 1.0, y + h - 1)
    if x2 < x1 or y2 < y1:
        return None
    return [x1, y1, x2, y2]


def parse_coco(content, ann_file):
    """Turns a parsed instances json into categories, raw records and counts.

    Args:
        content: the parsed json.
        ann_file: its path, for error messages.

    Returns:
        dict with "categories" (list of {"id", "name"} sorted by id), "images" (records with
        file_name relative to the image folder and "classes" holding *category ids*) and
        "stats" (counts).
    """
    if not isinstance(content, dict):
        raise DatasetError(f"{ann_file}: expected a JSON object with keys 'images', "
                           f"'annotations', 'categories'; got {type(content).__name__}")
    images = content.get("images")
    if not isinstance(images, list) or not images:
        raise DatasetError(f"{ann_file}: annotation file has no images (the 'images' list is "
                           f"missing or empty)")
    categories = content.get("categories")
    if not isinstance(categories, list) or not categories:
        raise DatasetError(f"{ann_file}: annotation file has no categories (the 'categories' "
                           f"list is missing or empty)")
    annotations = content.get("annotations", [])  # image_info_test-dev jsons have none
    if not isinstance(annotations, list):
        raise DatasetError(f"{ann_file}: 'annotations' must be a list, got "
                           f"{type(annotations).__name__}")

    cats = {}
    for i, cat in enumerate(categories):
        _require(cat, ("id", "name"), f"{ann_file}: categories[{i}]")
        if cat["id"] in cats:
            raise DatasetError(f"{ann_file}: categories[{i}]: duplicate category id {cat['id']}")
        cats[cat["id"]] = str(cat["name"])

    by_id = {}
    for i, img in enumerate(images):
        _require(img, ("id", "file_name", "height", "width"), f"{ann_file}: images[{i}]")
        if img["id"] in by_id:
            raise DatasetError(f"{ann_file}: images[{i}]: duplicate image id {img['id']}")
        by_id[img["id"]] = {"image_id": int(img["id"]), "file_name": str(img["file_name"]),
                            "height": int(img["height"]), "width": int(img["width"]),
                            "boxes": [], "classes": [], "crowd_boxes": [], "segmentations": [],
                            "flipped": False}

    degenerate = []
    for i, ann in enumerate(annotations):
        where = f"{ann_file}: annotations[{i}] (id {ann.get('id', '?')})"
        _require(ann, ("image_id", "category_id", "bbox"), where)
        rec = by_id.get(ann["image_id"])
        if rec is None:
            raise DatasetError(f"{where}: image_id {ann['image_id']} is not in 'images'")
        if ann["category_id"] not in cats:
            raise DatasetError(f"{where} of image_id {ann['image_id']}: category_id "
                               f"{ann['category_id']} is not in 'categories' (ids "
                               f"{sorted(cats)})")
        bbox = ann["bbox"]
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise DatasetError(f"{where}: bbox must be [x, y, w, h], got {bbox!r}")
        box = _xywh_to_clipped_xyxy(bbox, rec["height"], rec["width"])
        if box is None:
            degenerate.append((ann.get("id", i), ann["image_id"]))
            continue
        if ann.get("iscrowd", 0):
            rec["crowd_boxes"].append(box)
        else:
            rec["boxes"].append(box)
            rec["classes"].append(ann["category_id"])
            rec["segmentations"].append(ann.get("segmentation", []))

    records = []
    for rec in by_id.values():
        rec["boxes"] = np.asarray(rec["boxes"], np.float32).reshape(-1, 4)
        rec["classes"] = np.asarray(rec["classes"], np.int32)
        rec["crowd_boxes"] = np.asarray(rec["crowd_boxes"], np.float32).reshape(-1, 4)
        records.append(rec)
    stats = {"images": len(records), "annotations": len(annotations),
             "boxes": sum(len(r["boxes"]) for r in records),
             "crowd_boxes": sum(len(r["crowd_boxes"]) for r in records),
             "degenerate_boxes": len(degenerate),
             "degenerate_examples": [a for a, _ in degenerate[:_EXAMPLES]],
             "degenerate_image_ids": [im for _, im in degenerate[:_EXAMPLES]]}
    return {"categories": [{"id": k, "name": cats[k]} for k in sorted(cats)],
            "images": records, "stats": stats}


class CocoDataset:
    """Records of a COCO instances json plus the label mapping.

    Attributes:
        ann_file, image_dir: absolute paths.
        records: list of records (see the module docstring).
        class_names: K names; label l -> class_names[l - 1].
        cat_id_to_label, label_to_cat_id: json category id <-> contiguous label 1..K.
        stats: counts: images, annotations, boxes, crowd_boxes, degenerate_boxes,
            images_without_boxes, excluded_images (training mode), bad_images.
        loaded_from_cache: whether the records came from the pickle cache.
    """

    def __init__(self, ann_file, image_dir, *, cache_dir=None, for_training=True,
                 skip_bad_images=False):
        """
        Args:
            ann_file: an ``instances_*.json``.
            image_dir: folder holding the json's ``file_name`` entries.
            cache_dir: where the parsed records are pickled; default ``<json folder>/.cache``.
                The cache is keyed by the json's size, mtime and sha1.
            for_training: drop images without (non-crowd) boxes; test mode keeps them.
            skip_bad_images: make ``check_images()`` skip unreadable images (counted and
                logged) instead of raising.
        """
        self.ann_file = os.path.abspath(os.path.expanduser(str(ann_file)))
        self.image_dir = os.path.abspath(os.path.expanduser(str(image_dir)))
        self.for_training = for_training
        self.skip_bad_images = skip_bad_images
        if not os.path.isfile(self.ann_file):
            raise DatasetError(f"{self.ann_file}: annotation file not found; expected the "
                               f"layout {EXPECTED_LAYOUT}")
        if cache_dir is None:
            cache_dir = os.path.join(os.path.dirname(self.ann_file), ".cache")
        self.cache_file = os.path.join(
            os.path.abspath(os.path.expanduser(str(cache_dir))),
            os.path.splitext(os.path.basename(self.ann_file))[0] + ".records.pkl")

        parsed = self._load_or_parse()
        cat_ids = [c["id"] for c in parsed["categories"]]
        self.class_names = [c["name"] for c in parsed["categories"]]
        self.cat_id_to_label = {cid: i + 1 for i, cid in enumerate(cat_ids)}
        self.label_to_cat_id = {i + 1: cid for i, cid in enumerate(cat_ids)}
        self.stats = dict(parsed["stats"])
        self.records = [self._finish_record(r) for r in parsed["images"]]
        self._report_degenerate()
        self._filter_for_mode()

    @property
    def num_classes(self):
        """K, the number of foreground classes."""
        return len(self.class_names)

    def _finish_record(self, raw):
        rec = dict(raw)
        rec["file_name"] = os.path.join(self.image_dir, raw["file_name"])
        rec["classes"] = np.asarray([self.cat_id_to_label[c] for c in raw["classes"]], np.int32)
        return rec

    def _load_or_parse(self):
        key = file_fingerprint(self.ann_file)
        self.loaded_from_cache = False
        cached = self._read_cache()
        if cached is not None and cached.get("key") == key:
            self.loaded_from_cache = True
            return cached
        parsed = parse_coco(load_json(self.ann_file, "annotation file"), self.ann_file)
        parsed["key"] = key
        self._write_cache(parsed)
        return parsed

    def _read_cache(self):
        if not os.path.isfile(self.cache_file):
            return None
        try:
            with open(self.cache_file, "rb") as f:
                return pickle.load(f)
        except Exception as e:  # any unpickling failure means "rebuild"
            logger.warning("%s: unreadable records cache (%s); rebuilding it", self.cache_file, e)
            return None

    def _write_cache(self, payload):
        # temp file + rename: a reader never sees half a pickle.
        folder = os.path.dirname(self.cache_file)
        try:
            os.makedirs(folder, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=folder, prefix=".records-", suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                pickle.dump(payload, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, self.cache_file)
        except OSError as e:
            logger.warning("%s: cannot write records cache (%s); continuing without it",
                           self.cache_file, e)

    def _report_degenerate(self):
        n = self.stats["degenerate_boxes"]
        if n:
            logger.warning("%s: dropped %d degenerate box(es) (w or h < 1, or outside the image);"
                           " annotation ids e.g. %s in image ids %s", self.ann_file, n,
                           self.stats["degenerate_examples"], self.stats["degenerate_image_ids"])

    def _filter_for_mode(self):
        empty = [r["image_id"] for r in self.records if len(r["boxes"]) == 0]
        self.stats["images_without_boxes"] = len(empty)
        self.stats["excluded_images"] = 0
        self.stats["bad_images"] = 0
        if self.for_training and empty:
            self.records = [r for r in self.records if len(r["boxes"])]
            self.stats["excluded_images"] = len(empty)
            logger.info("%s: excluded %d image(s) without boxes from training, ids e.g. %s",
                        self.ann_file, len(empty), empty[:_EXAMPLES])
        if self.for_training and not self.records:
            raise DatasetError(f"{self.ann_file}: no image has a usable box; expected at least "
                               f"one non-crowd annotation with w and h >= 1 for training")

    def check_images(self, decode=True):
        """Checks every record's image file.

        Args:
            decode: fully decode each image (finds corrupt and truncated files); False only
                checks that the files exist.

        Returns:
            list of error messages, one per bad image (empty when all are fine). With
            skip_bad_images those records are removed and counted in stats["bad_images"];
            otherwise a DatasetError naming the first bad file is raised.
        """
        good, bad = [], []
        for rec in self.records:
            try:
                if decode:
                    read_image(rec)
                elif not os.path.isfile(rec["file_name"]):
                    raise DatasetError(f"{rec['file_name']}: image file not found")
                good.append(rec)
            except DatasetError as e:
                bad.append(f"{e} (image id {rec['image_id']} in {self.ann_file})")
        if bad and not self.skip_bad_images:
            raise DatasetError(f"{len(bad)} of {len(self.records)} image(s) unusable, first: "
                               f"{bad[0]}; pass skip_bad_images=True to skip them")
        if bad:
            logger.warning("%s: skipped %d unusable image(s), e.g. %s", self.ann_file, len(bad),
                           bad[:_EXAMPLES])
            self.records = good
            self.stats["bad_images"] += len(bad)
        return bad

    def __len__(self):
        return len(self.records)

    def __repr__(self):
        return (f"CocoDataset({self.ann_file!r}, {len(self.records)} records, "
                f"{self.num_classes} classes, for_training={self.for_training})")
