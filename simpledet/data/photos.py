"""A small COCO-format dataset of real photographs, hand-annotated, built offline.

The synthetic shapes set (simpledet.data.shapes) hides bugs by its symmetries: every image is
256x320 and landscape, category ids are 1..6 and contiguous, an image holds at most 10 boxes.
This set breaks each of them with 8 photographs that installed packages ship (scikit-image's
``skimage/data`` and matplotlib's ``mpl-data/sample_data``), so building it needs no network:

    file               HxW      boxes  classes
    astronaut.png      512x512  4      person, helmet, rocket (a shuttle model), flag
    camera.png         512x512  3      person, camera, tripod (grayscale file)
    chelsea.png        300x451  1      cat
    coffee_cw.png      600x400  3      cup, spoon, saucer (coffee.png turned 90 deg clockwise)
    coins.png          303x384  21+1   coin (grayscale file; + 1 iscrowd region of 3 coins)
    grace_hopper.jpg   600x512  2      person, flag
    motorcycle.png     500x741  4      motorcycle, bench, bicycle, bottle
    rocket.jpg         427x640  1      rocket

- portrait and landscape: grace_hopper.jpg, and coffee.png turned clockwise with its boxes and
  polygons turned exactly; sizes from 300x451 to 500x741, none 256x320, so resizing to the
  quickstart's input (short 256, long 320) or to 320/480 never has scale 1;
- non-contiguous category ids: COCO's where the class exists (person 1, bicycle 2, ...),
  made-up ids above 90 otherwise; the json lists categories out of id order (CLASS_NAMES is
  in id order, as a config's ``dataset.class_names`` must be); image ids are not 1..N either;
- boxes were drawn by hand on the stored pixels (COCO [x, y, w, h], tight on the visible
  object); polygons are rough hand outlines (box corners for a few thin or occluded objects,
  inscribed ellipses for the coins) whose extent is exactly the box;
- the coin boxes came from thresholding + connected components (:func:`threshold_coin_boxes`,
  checked by a test) and are stored here, so a build does not depend on SciPy's rounding;
- one iscrowd=1 annotation: three coins of the bottom row as one region, an uncompressed RLE
  as COCO stores crowds (those coins have no individual boxes).

Pixels are kept as the packages ship them: files are copied byte for byte, except that
astronaut.png and chelsea.png lose their iCCP colour-profile chunk (libpng warns about those
profiles on every decode) and the turned coffee photo is re-encoded (lossless PNG). camera.png
and coins.png stay grayscale files, as some COCO images are; the loader reads them as 3 equal
channels. Train and val hold the same images: the set is for overfitting and
evaluating on the training images.

Layout (as shapes and real COCO, see ``coco.coco_paths``)::

    <root>/images/{train,val}/<file name>
    <root>/annotations/instances_{train,val}.json
    <root>/params.json      (written last: its presence marks a complete dataset)
"""
import dataclasses
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
import zlib

import numpy as np

from simpledet.data.coco import DatasetError, DatasetPaths, coco_paths
from simpledet.data.shapes import default_cache_root, remove_stale_temps

CONTENT_VERSION = 1  # bump whenever any output byte changes: existing copies are rebuilt
SPLITS = ("train", "val")
_PARAMS_FILE = "params.json"

# Category ids in the order the json lists them (first use below): COCO ids where COCO has
# the class, made-up ids above 90 otherwise.
CATEGORY_IDS = {
    "person": 1, "helmet": 94, "rocket": 91, "flag": 92, "camera": 93, "tripod": 96, "cat": 17,
    "cup": 47, "spoon": 50, "saucer": 97, "coin": 95, "motorcycle": 4, "bench": 15,
    "bicycle": 2, "bottle": 44,
}
# Label l (1..K) is CLASS_NAMES[l - 1]: names in category-id order.
CLASS_NAMES = tuple(sorted(CATEGORY_IDS, key=CATEGORY_IDS.get))

_PIP_HINTS = {
    "skimage": "pip install scikit-image (the version pinned in pyproject.toml's test extra: "
               "pip install -e '.[test]')",
    "matplotlib": "pip install matplotlib (a dependency of simpledet: pip install -e .)",
}


@dataclasses.dataclass(frozen=True)
class _Photo:
    """One image: where it comes from, what becomes of it, and its hand annotations.

    objects: (class name, (x, y, w, h) box, outline) in the *source* photo's pixels. The
    outline is a polygon ((x, y), ...) spanning its box exactly, None for the box's corners,
    or "ellipse" for the ellipse inscribed in the box.
    """
    image_id: int
    file_name: str
    package: str  # "skimage" (skimage/data/) or "matplotlib" (mpl-data/sample_data/)
    source: str
    sha1: str  # of the source file: the boxes below are for exactly these pixels
    size_hw: tuple  # (height, width) of the source
    objects: tuple
    turn_clockwise: bool = False


# Coins in reading order, as threshold_coin_boxes finds them (checked by a test).
COIN_BOXES = (
    (22, 35, 45, 39), (81, 39, 39, 35), (132, 28, 47, 46), (192, 30, 48, 43), (255, 34, 42, 38),
    (305, 16, 60, 56), (25, 104, 42, 42), (84, 107, 38, 38), (133, 110, 41, 35),
    (185, 105, 42, 40), (245, 96, 51, 48), (317, 105, 39, 40), (25, 178, 38, 38),
    (80, 175, 44, 42), (135, 179, 39, 38), (189, 170, 48, 47), (251, 172, 46, 45),
    (315, 156, 65, 62), (18, 233, 57, 55), (92, 245, 44, 42), (144, 236, 57, 52),
    (220, 240, 49, 48), (276, 239, 51, 49), (335, 248, 46, 41),
)
CROWD_COINS = 3  # the last coins of the bottom row form the iscrowd region

PHOTOS = (
    _Photo(139, "astronaut.png", "skimage", "astronaut.png",
           "ac0142571c61bb07e21a17e634596b6dc73f510f", (512, 512), (
               ("person", (19, 15, 343, 497), (
                   (19, 512), (22, 400), (40, 300), (55, 265), (95, 222), (115, 208),
                   (115, 190), (150, 150), (155, 60), (200, 25), (228, 15), (265, 25), (295, 60),
                   (300, 120), (290, 170), (305, 200), (303, 262), (340, 280), (362, 345),
                   (300, 385), (280, 512))),
               ("helmet", (278, 342, 234, 170), (
                   (278, 512), (280, 440), (300, 395), (340, 360), (400, 342), (450, 350),
                   (490, 380), (512, 430), (512, 512))),
               ("rocket", (352, 0, 106, 269), (
                   (400, 0), (430, 0), (440, 40), (450, 45), (458, 75), (458, 269), (420, 269),
                   (408, 240), (395, 269), (375, 269), (352, 228), (352, 212), (380, 180),
                   (380, 95), (388, 50), (398, 40))),
               ("flag", (0, 0, 97, 512), (
                   (0, 0), (48, 0), (60, 90), (75, 160), (97, 225), (40, 300), (20, 420),
                   (18, 512), (0, 512))),
           )),
    _Photo(285, "camera.png", "skimage", "camera.png",
           "0a440fac74c4b3a453e86942b4146815b3ca4c97", (512, 512), (
               ("person", (0, 62, 332, 450), (
                   (0, 512), (0, 262), (20, 222), (65, 166), (125, 124), (152, 107), (160, 80),
                   (175, 68), (200, 62), (240, 70), (265, 100), (270, 135), (255, 145),
                   (262, 180), (300, 182), (332, 170), (332, 200), (320, 230), (300, 262),
                   (300, 290), (280, 302), (250, 310), (200, 350), (165, 360), (150, 450),
                   (160, 512))),
               ("camera", (254, 139, 71, 42), (
                   (254, 150), (262, 145), (290, 139), (325, 139), (325, 165), (318, 181),
                   (262, 181), (254, 172))),
               ("tripod", (230, 181, 174, 331), (
                   (283, 181), (300, 181), (303, 298), (338, 298), (338, 310), (312, 325),
                   (404, 505), (404, 512), (394, 512), (302, 345), (298, 487), (286, 487),
                   (284, 345), (244, 512), (230, 512), (230, 493), (281, 320))),
           )),
    _Photo(632, "chelsea.png", "skimage", "chelsea.png",
           "df9eb3dbf4887aa5f75fdcbae5facea0522ca15f", (300, 451), (
               ("cat", (0, 0, 399, 300), (
                   (28, 0), (399, 0), (372, 95), (380, 160), (372, 230), (385, 300), (0, 300),
                   (0, 130), (15, 80))),
           )),
    _Photo(724, "coffee_cw.png", "skimage", "coffee.png",
           "12b3dd17187374ea93c22228e8e5c62939999148", (400, 600), (
               ("cup", (173, 18, 235, 289), (
                   (173, 100), (190, 50), (230, 25), (290, 18), (350, 25), (395, 55), (408, 100),
                   (400, 170), (380, 230), (350, 270), (310, 288), (260, 285), (256, 300),
                   (240, 307), (205, 307), (196, 290), (205, 250), (215, 232), (195, 200),
                   (180, 160))),
               ("spoon", (326, 68, 98, 257), (
                   (400, 70), (412, 68), (424, 72), (420, 110), (395, 240), (405, 265),
                   (406, 300), (390, 320), (360, 325), (335, 315), (326, 290), (335, 262),
                   (360, 248), (385, 235), (398, 110))),
               ("saucer", (77, 72, 403, 314), (
                   (77, 240), (85, 190), (110, 140), (150, 105), (200, 80), (260, 72), (320, 72),
                   (380, 82), (430, 110), (465, 150), (480, 200), (478, 260), (455, 310),
                   (410, 350), (340, 380), (280, 386), (210, 380), (150, 360), (105, 325),
                   (82, 285))),
           ), turn_clockwise=True),
    _Photo(776, "coins.png", "skimage", "coins.png",
           "3deae592a61771bde59494944d41901dcb282bbe", (303, 384),
           tuple(("coin", box, "ellipse") for box in COIN_BOXES[:-CROWD_COINS])),
    _Photo(785, "grace_hopper.jpg", "matplotlib", "grace_hopper.jpg",
           "11638b5afc7225d0a1088521a7edd467a6f4dc35", (600, 512), (
               ("person", (12, 24, 500, 576), (
                   (12, 600), (25, 440), (60, 395), (130, 370), (180, 340), (168, 285),
                   (160, 240), (150, 175), (150, 120), (165, 85), (200, 50), (250, 28),
                   (275, 24), (300, 26), (330, 40), (355, 68), (372, 115), (372, 175),
                   (365, 230), (350, 300), (345, 320), (410, 360), (480, 400), (512, 440),
                   (512, 600))),
               ("flag", (0, 0, 237, 600), (
                   (0, 0), (237, 0), (232, 35), (200, 60), (180, 140), (160, 250), (165, 340),
                   (120, 360), (60, 380), (30, 420), (12, 600), (0, 600))),
           )),
    _Photo(802, "motorcycle.png", "skimage", "motorcycle_left.png",
           "f5ec68c10ada806e283c376b7cfc36110248dab0", (500, 741), (
               ("motorcycle", (92, 30, 591, 420), (
                   (92, 196), (138, 190), (140, 150), (160, 143), (165, 160), (240, 160),
                   (300, 172), (347, 185), (362, 160), (330, 125), (335, 108), (375, 112),
                   (410, 130), (450, 125), (470, 95), (505, 30), (518, 30), (520, 95),
                   (545, 100), (565, 118), (582, 125), (582, 145), (560, 160), (575, 200),
                   (610, 260), (650, 300), (672, 340), (683, 400), (670, 440), (620, 450),
                   (560, 420), (515, 340), (470, 380), (395, 380), (350, 437), (325, 437),
                   (320, 380), (275, 375), (250, 395), (200, 400), (145, 370), (121, 320),
                   (130, 280), (110, 250), (92, 218))),
               ("bench", (43, 107, 242, 202), None),
               ("bicycle", (0, 148, 56, 78), None),
               ("bottle", (401, 51, 18, 46), (
                   (406, 51), (414, 51), (414, 58), (419, 60), (419, 97), (401, 97), (401, 60),
                   (406, 58))),
           )),
    _Photo(872, "rocket.jpg", "skimage", "rocket.jpg",
           "8c32d660c2ab4c468a54c01aa1ab9183ea7d9b56", (427, 640), (
               ("rocket", (310, 127, 25, 278), (
                   (322.5, 127), (316, 135), (310, 150), (310, 185), (311, 190), (311, 405),
                   (334, 405), (334, 190), (335, 185), (335, 150), (329, 135))),
           )),
)


# ---- geometry ------------------------------------------------------------------------------

def _box_corners(box):
    x, y, w, h = box
    return ((x, y), (x + w, y), (x + w, y + h), (x, y + h))


def _ellipse(box, vertices=16):
    """The ellipse inscribed in a box, as polygon points on a 1/100-pixel grid; its extent is
    the box exactly (vertices at 0, 90, 180 and 270 degrees)."""
    x, y, w, h = box
    t = 2 * np.pi * np.arange(vertices) / vertices
    xs = np.round(x + w / 2 + w / 2 * np.cos(t), 2)
    ys = np.round(y + h / 2 + h / 2 * np.sin(t), 2)
    return tuple((float(a), float(b)) for a, b in zip(xs, ys))


def turn_box_clockwise(box, height):
    """A COCO [x, y, w, h] box of an image ``height`` rows high, after np.rot90(image, -1)
    (cv2.ROTATE_90_CLOCKWISE): pixel (x, y) moves to (height - 1 - y, x)."""
    x, y, w, h = box
    return (height - y - h, x, h, w)


def turn_points_clockwise(points, height):
    """Polygon points (continuous pixel coordinates) under the same turn: (x, y) -> (H - y, x)."""
    return tuple((height - y, x) for x, y in points)


def _outline(box, polygon):
    if polygon is None:
        return _box_corners(box)
    if polygon == "ellipse":
        return _ellipse(box)
    return tuple(polygon)


def _check_outline(file_name, name, box, points):
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x, y, w, h = box
    if (min(xs), min(ys), max(xs), max(ys)) != (x, y, x + w, y + h):
        raise ValueError(f"{file_name}: the {name} polygon spans "
                         f"{(min(xs), min(ys), max(xs), max(ys))}, its box {box}")


def _uncompressed_rle(mask):
    """COCO's uncompressed RLE of a binary (H, W) mask: column-major runs, zeros first."""
    flat = np.asarray(mask, dtype=np.uint8).ravel(order="F")
    starts = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], starts, [flat.size]])).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def _polygon_area(flat, height, width):
    from pycocotools import mask as mask_utils

    return int(mask_utils.area(mask_utils.merge(mask_utils.frPyObjects([flat], height, width))))


def _crowd_annotation(height, width):
    """The iscrowd region: the last CROWD_COINS coins, their ellipses merged into one RLE."""
    from pycocotools import mask as mask_utils

    polygons = [[v for p in _ellipse(box) for v in p] for box in COIN_BOXES[-CROWD_COINS:]]
    mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width)))
    ys, xs = np.nonzero(mask)
    box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
           int(ys.max() - ys.min() + 1)]
    return {"category_id": CATEGORY_IDS["coin"], "bbox": box, "area": int(mask.sum()),
            "iscrowd": 1, "segmentation": _uncompressed_rle(mask)}


def image_entries_and_annotations():
    """The json's "images" and "annotations" lists (annotation ids 1..N in photo order)."""
    images, annotations = [], []
    for photo in PHOTOS:
        height, width = photo.size_hw
        entries = []
        for name, box, polygon in photo.objects:
            points = _outline(box, polygon)
            _check_outline(photo.file_name, name, box, points)
            if photo.turn_clockwise:
                box, points = turn_box_clockwise(box, height), turn_points_clockwise(points, height)
            entries.append({"category_id": CATEGORY_IDS[name], "bbox": list(box),
                            "points": points, "iscrowd": 0})
        if photo.turn_clockwise:
            height, width = width, height
        images.append({"id": photo.image_id, "file_name": photo.file_name, "height": height,
                       "width": width, "source": f"{photo.package}: {photo.source}"})
        for entry in entries:
            flat = [v for p in entry.pop("points") for v in p]
            annotations.append({"image_id": photo.image_id, **entry,
                                "area": _polygon_area(flat, height, width),
                                "segmentation": [flat]})
        if photo.file_name == "coins.png":
            annotations.append({"image_id": photo.image_id, **_crowd_annotation(height, width)})
    for i, ann in enumerate(annotations):
        ann["id"] = i + 1
    return images, annotations


# ---- the source files -----------------------------------------------------------------------

def _package_dir(package):
    if package == "matplotlib":
        try:
            import matplotlib
        except ImportError:
            raise DatasetError(f"matplotlib is not installed; {_PIP_HINTS[package]}") from None
        return os.path.join(matplotlib.get_data_path(), "sample_data")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin:
        raise DatasetError(f"{package} is not installed (its sample photos are part of the "
                           f"photos dataset); {_PIP_HINTS[package]}")
    return os.path.join(os.path.dirname(spec.origin), "data")


def source_path(photo):
    """The installed file a photo is made from."""
    return os.path.join(_package_dir(photo.package), photo.source)


def _read_source(photo):
    path = source_path(photo)
    if not os.path.isfile(path):
        raise DatasetError(f"{path}: sample photo not found in the installed {photo.package}; "
                           f"{_PIP_HINTS[photo.package]}")
    with open(path, "rb") as f:
        data = f.read()
    digest = hashlib.sha1(data).hexdigest()
    if digest != photo.sha1:
        raise DatasetError(f"{path}: sha1 {digest}, expected {photo.sha1}: another version of "
                           f"the photo, and the hand-drawn boxes are for that one; "
                           f"{_PIP_HINTS[photo.package]}")
    return data


def _png_without_chunks(data, drop):
    """The PNG file with the named ancillary chunks removed; every other byte unchanged."""
    out, pos = [data[:8]], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        end = pos + 12 + length
        kind, body = data[pos + 4:pos + 8], data[pos + 8:end - 4]
        if zlib.crc32(kind + body) != struct.unpack(">I", data[end - 4:end])[0]:
            raise DatasetError(f"corrupt PNG chunk {kind!r} at byte {pos}")
        if kind not in drop:
            out.append(data[pos:end])
        pos = end
    return b"".join(out)


def photo_bytes(photo):
    """The stored file's bytes (deterministic: the same for the same installed packages)."""
    data = _read_source(photo)
    if photo.turn_clockwise:
        import cv2

        image = cv2.imdecode(np.frombuffer(data, np.uint8),
                             cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        ok, encoded = cv2.imencode(".png", cv2.rotate(image, cv2.ROTATE_90_CLOCKWISE),
                                   [cv2.IMWRITE_PNG_COMPRESSION, 6])
        if not ok:
            raise DatasetError(f"{photo.source}: cv2.imencode failed")
        return encoded.tobytes()
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return _png_without_chunks(data, {b"iCCP"})
    return data


def threshold_coin_boxes(gray):
    """Boxes [x, y, w, h] of the coins in coins.png (uint8 (H, W)), in reading order.

    Subtracts the uneven background (a 71-pixel grey opening, smoothed), keeps pixels 40 above
    it and brighter than 95, fills holes, opens with a radius-6 disk (cuts thin bridges to the
    lit image borders) and boxes the convex hull of each component of >= 1000 pixels that does
    not touch the image border. How COIN_BOXES were made; tests/data/test_photos.py checks
    that they still agree.
    """
    import cv2
    from scipy import ndimage

    image = np.asarray(gray, dtype=np.float64)
    background = ndimage.uniform_filter(ndimage.grey_opening(image, size=(71, 71)), 31)
    mask = ndimage.binary_fill_holes((image - background > 40) & (image > 95))
    yy, xx = np.mgrid[-6:7, -6:7]
    mask = ndimage.binary_opening(mask, structure=xx ** 2 + yy ** 2 <= 36)
    labels, count = ndimage.label(mask)
    boxes = []
    for label in range(1, count + 1):
        component = (labels == label).astype(np.uint8)
        if component.sum() < 1000:
            continue
        contour = cv2.findContours(component, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0][0]
        x, y, w, h = cv2.boundingRect(cv2.convexHull(contour))
        if x > 0 and y > 0 and x + w < image.shape[1] and y + h < image.shape[0]:
            boxes.append((x, y, w, h))
    boxes.sort(key=lambda b: b[1])  # a new row starts where y jumps by more than 30
    rows = np.cumsum(np.diff([b[1] for b in boxes], prepend=boxes[0][1] if boxes else 0) > 30)
    return [b for _, b in sorted(zip(rows, boxes), key=lambda rb: (rb[0], rb[1][0]))]


# ---- the dataset ----------------------------------------------------------------------------

def photos_params():
    """What determines the dataset's content (stored in params.json)."""
    return {"dataset": "photos", "content_version": CONTENT_VERSION}


def photos_root(params=None):
    """The default folder (no file is touched): ``<default_cache_root()>/photos-<params hash>``."""
    params = photos_params() if params is None else params
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(default_cache_root(), f"photos-{digest}")


def _categories_json():
    return [{"id": cid, "name": name, "supercategory": "photos"}
            for name, cid in CATEGORY_IDS.items()]


def write_dataset(root):
    """Writes both splits under ``root`` (params.json excluded)."""
    files = {photo.file_name: photo_bytes(photo) for photo in PHOTOS}
    images, annotations = image_entries_and_annotations()
    for split in SPLITS:
        ann_file, image_dir = coco_paths(root, split)
        os.makedirs(image_dir, exist_ok=True)
        os.makedirs(os.path.dirname(ann_file), exist_ok=True)
        for file_name, data in files.items():
            with open(os.path.join(image_dir, file_name), "wb") as f:
                f.write(data)
        content = {"info": {"description": "SimpleDet photos: real photographs shipped by "
                                           "scikit-image and matplotlib, annotated by hand",
                            "split": split, "content_version": CONTENT_VERSION},
                   "images": images, "annotations": annotations,
                   "categories": _categories_json()}
        with open(ann_file, "w") as f:
            json.dump(content, f, separators=(",", ":"))


def _read_params(root):
    try:
        with open(os.path.join(root, _PARAMS_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _state(root, params):
    """'absent' (missing or an empty folder), 'current', 'outdated' (an older photos build)."""
    if not os.path.exists(root) or (os.path.isdir(root) and not os.listdir(root)):
        return "absent"
    found = _read_params(root)
    if found == params:
        return "current"
    if isinstance(found, dict) and found.get("dataset") == params["dataset"]:
        return "outdated"
    raise DatasetError(f"{root}: exists but is not a photos dataset (no readable {_PARAMS_FILE} "
                       f"naming one); delete it or choose another folder")


def ensure_photos_dataset(root=None):
    """Builds the photos dataset on first use; later calls just return its paths.

    Built in a temporary sibling folder and renamed into place with params.json inside, so a
    killed or concurrent build never leaves a folder that looks complete. A folder holding an
    older CONTENT_VERSION is replaced the same way (renamed aside, then deleted).

    Args:
        root: the dataset folder; default :func:`photos_root`.

    Returns:
        DatasetPaths.

    Raises:
        DatasetError: a source photo is missing (the message names the pip install that
            provides it) or differs from the annotated one, or ``root`` holds something else.
    """
    params = photos_params()
    root = os.path.abspath(os.path.expanduser(str(photos_root(params) if root is None else root)))
    state = _state(root, params)
    if state == "current":
        return DatasetPaths(root, params)
    parent, base = os.path.split(root)
    os.makedirs(parent, exist_ok=True)
    prefix = f".{base}.tmp-"
    remove_stale_temps(parent, prefix)
    tmp = tempfile.mkdtemp(dir=parent, prefix=prefix)
    old = None
    try:
        write_dataset(tmp)
        with open(os.path.join(tmp, _PARAMS_FILE), "w") as f:
            json.dump(params, f, indent=1, sort_keys=True)
        if state == "outdated":
            if _state(root, params) == "current":  # another process replaced it meanwhile
                return DatasetPaths(root, params)
            old = tempfile.mkdtemp(dir=parent, prefix=prefix)
            os.rename(root, os.path.join(old, base))
        elif os.path.isdir(root):
            os.rmdir(root)  # an empty folder made by the user is fine to replace
        try:
            os.rename(tmp, root)
        except OSError:
            if _state(root, params) != "current":  # else another process won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return DatasetPaths(root, params)

