"""A synthetic COCO-format dataset of coloured shapes, deterministic from a seed.

Layout (as real COCO, see ``coco.coco_paths``)::

    <root>/images/{train,val}/000001.jpg ...
    <root>/annotations/instances_{train,val}.json
    <root>/params.json      (written last: its presence marks a complete dataset)

What an image holds (default 256x320, HxW, a size CPU training handles):
- a textured background: a two-colour gradient, low-frequency colour noise, a few thin
  distractor lines, and per-pixel noise over everything at the end;
- 1..10 instances of 6 classes (CLASS_NAMES), random colour, rotation and aspect ratio
  (ellipse 1.7..3:1, triangle and cross stretched 0.6..1.6), sized so areas fall in all three
  COCO ranges (small < 32^2, medium, large > 96^2);
- later instances are painted over earlier ones. Boxes and polygons always describe the *full*
  shape, as if nothing covered it. An instance that would be more than
  MAX_OCCLUDED hidden is not drawn at all (and not labelled), so no label points at an
  unrecognisable sliver and no visible sliver goes unlabelled. Removing an instance only uncovers
  the others, so one pass suffices. The instance drawn last is never hidden: >= 1 per image.

Masks are rasterised with pycocotools from the very polygons written to the json, and those
pixels are the ones painted, so a perfect detector gets bbox and segm AP 1.0.
"""
import hashlib
import json
import os
import shutil
import tempfile
import time

import numpy as np

from simpledet.data.coco import DatasetError, DatasetPaths, coco_paths

GENERATOR_VERSION = 1  # bump when the output for a given seed changes
DEFAULT_SIZE = (256, 320)  # (height, width)
CLASS_NAMES = ("circle", "square", "triangle", "ellipse", "star", "cross")
MAX_INSTANCES = 10
MAX_OCCLUDED = 0.7
# (probability, min side, max side): target area is side^2, log-uniform within the bucket.
AREA_BUCKETS = ((0.4, 10, 30), (0.4, 36, 90), (0.2, 100, 170))
SPLITS = ("train", "val")
_PARAMS_FILE = "params.json"
_STALE_TMP_SECONDS = 3600


def _unit_polygon(name, rng):
    """Vertices (V, 2) float64 of a shape centred at the origin, before scaling."""
    if name in ("circle", "ellipse"):
        aspect = 1.0 if name == "circle" else rng.uniform(1.7, 3.0)
        t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
        pts = np.stack([np.cos(t), np.sin(t) / aspect], axis=1)
    elif name == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    elif name == "triangle":
        t = np.deg2rad(90 + 120 * np.arange(3) + rng.uniform(-20, 20, 3))
        pts = np.stack([np.cos(t), np.sin(t)], axis=1) * [rng.uniform(0.6, 1.6), 1.0]
    elif name == "star":
        t = np.pi / 2 + np.pi / 5 * np.arange(10)
        radius = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        pts = np.stack([np.cos(t), np.sin(t)], axis=1) * radius[:, None]
    elif name == "cross":
        a = rng.uniform(0.25, 0.4)  # half-thickness of the arms
        pts = np.array([[-a, -1], [a, -1], [a, -a], [1, -a], [1, a], [a, a], [a, 1], [-a, 1],
                        [-a, a], [-1, a], [-1, -a], [-a, -a]]) * [rng.uniform(0.6, 1.6), 1.0]
    else:
        raise ValueError(f"unknown shape {name!r}; expected one of {CLASS_NAMES}")
    angle = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    return pts @ rot.T


def _polygon_area(pts):
    x, y = pts[:, 0], pts[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def _sample_polygon(name, rng, height, width):
    """A placed polygon (V, 2) in COCO pixel coordinates, fully inside the image."""
    probs, lows, highs = zip(*AREA_BUCKETS)
    bucket = rng.choice(len(AREA_BUCKETS), p=probs)
    side = np.exp(rng.uniform(np.log(lows[bucket]), np.log(highs[bucket])))
    pts = _unit_polygon(name, rng)
    pts = pts * np.sqrt(side * side / _polygon_area(pts))
    extent = pts.max(0) - pts.min(0)
    fit = min(1.0, (width - 4) / extent[0], (height - 4) / extent[1])
    pts = pts * fit
    lo, hi = pts.min(0), pts.max(0)
    offset = [rng.uniform(1 - lo[0], width - 2 - hi[0]), rng.uniform(1 - lo[1], height - 2 - hi[1])]
    # 1/8-pixel grid: exact in json and identical across platforms
    return np.round((pts + offset) * 8) / 8


def _background(rng, height, width):
    """float32 (H, W, 3) gradient + low-frequency noise + thin distractor lines."""
    import cv2

    c0, c1 = rng.uniform(0, 255, 3).astype(np.float32), rng.uniform(0, 255, 3).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    xs = np.arange(width, dtype=np.float32)[None, :] * np.float32(np.cos(angle))
    ys = np.arange(height, dtype=np.float32)[:, None] * np.float32(np.sin(angle))
    t = xs + ys
    t = (t - t.min()) / max(float(t.max() - t.min()), 1.0)
    image = c0 + (c1 - c0) * t[..., None]
    blobs = rng.normal(0, 25, (height // 32 + 2, width // 32 + 2, 3)).astype(np.float32)
    image = image + cv2.resize(blobs, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(rng.integers(0, 5)):
        p0 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        p1 = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        cv2.line(image, p0, p1, colour, int(rng.integers(1, 3)), cv2.LINE_AA)
    return np.clip(image, 0, 255).astype(np.float32)


def _contrasting_colour(rng, reference):
    """A random colour at least 90 (L1, summed over channels) away from ``reference``."""
    colour = rng.uniform(0, 255, 3)
    for _ in range(20):
        if np.abs(colour - reference).sum() >= 90:
            break
        colour = rng.uniform(0, 255, 3)
    return colour


def render_image(rng, height, width):
    """One synthetic image and its instances.

    Args:
        rng: numpy Generator (all randomness comes from it).
        height, width: image size.

    Returns:
        (image uint8 (H, W, 3) BGR, list of {"label": 1..K, "polygon": flat [x0, y0, ...],
         "bbox": [x, y, w, h] pixel extents, "area": mask pixel count}) in drawing order.
    """
    from pycocotools import mask as mask_utils

    image = _background(rng, height, width)
    candidates = []
    for _ in range(int(rng.integers(1, MAX_INSTANCES + 1))):
        label = int(rng.integers(1, len(CLASS_NAMES) + 1))
        polygon = _sample_polygon(CLASS_NAMES[label - 1], rng, height, width)
        flat = polygon.ravel().tolist()
        rle = mask_utils.merge(mask_utils.frPyObjects([flat], height, width))
        x, y, w, h = (int(v) for v in mask_utils.toBbox(rle))
        if w == 0:  # a sub-pixel sliver: nothing to see or learn
            continue
        # Masks are kept as their box crop: everything below works inside the box.
        mask = mask_utils.decode(rle)[y:y + h, x:x + w].astype(bool)
        candidates.append({"label": label, "polygon": flat, "mask": mask,
                           "bbox": [x, y, w, h], "area": int(mask.sum())})
    # Who owns each pixel once everything is painted in order; drop the mostly hidden.
    owner = np.full((height, width), -1, np.int32)
    for i, inst in enumerate(candidates):
        x, y, w, h = inst["bbox"]
        owner[y:y + h, x:x + w][inst["mask"]] = i
    kept = []
    for i, inst in enumerate(candidates):
        x, y, w, h = inst["bbox"]
        visible = (owner[y:y + h, x:x + w][inst["mask"]] == i).sum()
        if visible >= (1 - MAX_OCCLUDED) * inst["area"]:
            kept.append(inst)
    for inst in kept:
        x, y, w, h = inst["bbox"]
        region = image[y:y + h, x:x + w]
        colour = _contrasting_colour(rng, region.reshape(-1, 3).mean(0))
        shading = rng.uniform(0.8, 1.2)  # a gentle vertical gradient inside the shape
        ramp = 1 + (shading - 1) * np.arange(h, dtype=np.float32)[:, None] / max(h - 1, 1)
        fill = np.clip(colour[None, None, :] * ramp[..., None], 0, 255)
        region[inst["mask"]] = np.broadcast_to(fill, (h, w, 3))[inst["mask"]]
    # Uniform per-pixel noise (std 3..10): rng.bytes is far cheaper than rng.normal.
    noise = np.frombuffer(rng.bytes(image.size), np.uint8).reshape(image.shape)
    image += (noise.astype(np.float32) * np.float32(1 / 255) - 0.5) * np.float32(
        rng.uniform(10, 35))
    image = np.clip(np.round(image), 0, 255).astype(np.uint8)
    for inst in kept:
        del inst["mask"]
    return image, kept


def _image_rng(seed, split, index):
    # One independent stream per image: adding images never changes existing ones.
    return np.random.default_rng([int(seed), SPLITS.index(split), int(index)])


def write_split(root, split, count, *, seed, size, image_format):
    """Renders ``count`` images of a split under ``root``; returns the annotation file path."""
    import cv2

    ann_file, image_dir = coco_paths(root, split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.dirname(ann_file), exist_ok=True)
    height, width = size
    images, annotations = [], []
    encode = [cv2.IMWRITE_JPEG_QUALITY, 92] if image_format == "jpg" else []
    for index in range(count):
        image, instances = render_image(_image_rng(seed, split, index), height, width)
        file_name = f"{index + 1:06d}.{image_format}"
        if not cv2.imwrite(os.path.join(image_dir, file_name), image, encode):
            raise OSError(f"{os.path.join(image_dir, file_name)}: cv2.imwrite failed")
        images.append({"id": index + 1, "file_name": file_name, "height": height, "width": width})
        for inst in instances:
            annotations.append({"id": len(annotations) + 1, "image_id": index + 1,
                                "category_id": inst["label"], "bbox": inst["bbox"],
                                "area": inst["area"], "iscrowd": 0,
                                "segmentation": [inst["polygon"]]})
    content = {"info": {"description": "SimpleDet synthetic shapes", "split": split,
                        "seed": int(seed), "size_hw": list(size),
                        "generator_version": GENERATOR_VERSION},
               "images": images, "annotations": annotations,
               "categories": [{"id": i + 1, "name": n, "supercategory": "shape"}
                              for i, n in enumerate(CLASS_NAMES)]}
    with open(ann_file, "w") as f:
        json.dump(content, f, separators=(",", ":"))
    return ann_file


def shapes_params(train, val, seed, size, image_format):
    """The parameters that determine a dataset's content (stored in params.json)."""
    if image_format not in ("jpg", "png"):
        raise ValueError(f"image_format must be 'jpg' or 'png', got {image_format!r}")
    height, width = (int(v) for v in size)
    if height < 64 or width < 64:
        raise ValueError(f"size must be at least 64x64 (HxW), got {height}x{width}")
    if train < 0 or val < 0:
        raise ValueError(f"image counts must be >= 0, got train={train}, val={val}")
    return {"generator_version": GENERATOR_VERSION, "train": int(train), "val": int(val),
            "seed": int(seed), "size_hw": [height, width], "image_format": image_format}


def default_cache_root():
    """``$SIMPLEDET_CACHE_DIR`` or ``~/.cache/simpledet``."""
    return os.environ.get("SIMPLEDET_CACHE_DIR") or os.path.expanduser("~/.cache/simpledet")


def shapes_root(params):
    """The default folder of the dataset with these parameters (no file is touched):
    ``<default_cache_root()>/shapes-<hash of params>``."""
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return os.path.join(default_cache_root(), f"shapes-{digest}")


def _read_params(root):
    path = os.path.join(root, _PARAMS_FILE)
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def remove_stale_temps(parent, prefix):
    """Removes ``prefix*`` folders in ``parent`` untouched for an hour: leftovers of killed
    builds (a live one touches its folder far more often)."""
    now = time.time()
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if name.startswith(prefix) and now - os.path.getmtime(path) > _STALE_TMP_SECONDS:
            shutil.rmtree(path, ignore_errors=True)


def ensure_shapes_dataset(root=None, *, train=1000, val=200, seed=0, size=DEFAULT_SIZE,
                          image_format="jpg"):
    """Generates the shapes dataset on first use; later calls just return its paths.

    The dataset is rendered into a temporary sibling folder and renamed into place with
    params.json inside, so a killed or concurrent generation never leaves a folder that looks
    complete; when two processes race, the second rename fails and the first result is used.

    Args:
        root: the dataset folder; default ``<default_cache_root()>/shapes-<params hash>``.
        train, val: number of images per split.
        seed: the seed everything is derived from.
        size: (height, width) of every image.
        image_format: "jpg" (small files) or "png" (lossless).

    Returns:
        DatasetPaths.
    """
    params = shapes_params(train, val, seed, size, image_format)
    if root is None:
        root = shapes_root(params)
    root = os.path.abspath(os.path.expanduser(str(root)))
    existing = _check_existing(root, params)
    if existing:
        return existing
    parent, base = os.path.split(root)
    os.makedirs(parent, exist_ok=True)
    prefix = f".{base}.tmp-"
    remove_stale_temps(parent, prefix)
    tmp = tempfile.mkdtemp(dir=parent, prefix=prefix)
    try:
        for split in SPLITS:
            write_split(tmp, split, params[split], seed=seed, size=params["size_hw"],
                        image_format=image_format)
        with open(os.path.join(tmp, _PARAMS_FILE), "w") as f:
            json.dump(params, f, indent=1, sort_keys=True)
        if os.path.isdir(root) and not os.listdir(root):
            os.rmdir(root)  # an empty folder made by the user is fine to replace
        try:
            os.rename(tmp, root)
        except OSError:
            existing = _check_existing(root, params)  # another process won the race
            if not existing:
                raise
            return existing
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DatasetPaths(root, params)


def _check_existing(root, params):
    """DatasetPaths if ``root`` holds this exact dataset; None if absent or an empty folder."""
    if not os.path.exists(root) or (os.path.isdir(root) and not os.listdir(root)):
        return None
    found = _read_params(root)
    if found is None:
        raise DatasetError(f"{root}: exists but is not a complete shapes dataset (no readable "
                           f"{_PARAMS_FILE}); delete it or choose another folder")
    if found != params:
        diff = {k: (found.get(k), v) for k, v in params.items() if found.get(k) != v}
        raise DatasetError(f"{os.path.join(root, _PARAMS_FILE)}: dataset was generated with "
                           f"other parameters (found, wanted): {diff}; delete it or choose "
                           f"another folder")
    return DatasetPaths(root, params)
