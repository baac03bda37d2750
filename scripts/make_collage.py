"""Writes a COCO-like "collage" dataset: real photographs pasted onto real textures.

    python scripts/make_collage.py --out data/collage [--images 128] [--seed 0]

The shapes set is easy (flat colours, 6 classes, objects >= 10 px at scale 1). Real COCO is
not, and a from-scratch recipe tuned on shapes can diverge there (docs/from_scratch.md). This
set reproduces that offline from files installed packages ship (scikit-image's sample photos,
matplotlib's grace_hopper.jpg): each object is a whole photograph (one of 16, in 4 variants:
as is, turned, inverted, channel-swapped: 64 classes), resized to 6..~600 px with its aspect
jittered and pasted onto a texture photo (brick, grass, gravel, retina, cell). Images are
640 x 360..512, 60 % landscape, 1-8 objects (15 % of them 20-40), and the 64 classes take
COCO category ids (with COCO's gaps) and names, so ``dataset.class_names`` keeps its COCO
default. Train and val are the same images. Output: <out>/annotations/instances_{train,val}.json
and <out>/images/{train,val}/*.jpg.
"""
import argparse
import importlib.util
import json
import os
import sys

import cv2
import numpy as np

OBJECTS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
           "camera.png", "coins.png", "ihc.png", "color.png", "clock_motion.png", "page.png",
           "text.png", "hubble_deep_field.jpg", "moon.png", "phantom.png", "grace_hopper.jpg")
TEXTURES = ("brick.png", "grass.png", "gravel.png", "retina.jpg", "cell.png")
# COCO's 80 category ids: 1..90 without the ids COCO never used.
COCO_IDS = tuple(i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
MAX_OVERLAP = 0.3  # of the smaller box: a paste covering more is placed elsewhere


def _source(name):
    if name == "grace_hopper.jpg":
        import matplotlib

        return os.path.join(matplotlib.get_data_path(), "sample_data", name)
    spec = importlib.util.find_spec("skimage")
    if spec is None:
        sys.exit("error: scikit-image is not installed (pip install -e '.[test]')")
    return os.path.join(os.path.dirname(spec.origin), "data", name)


def _read(name):
    image = cv2.imread(_source(name), cv2.IMREAD_COLOR)
    if image is None:
        sys.exit(f"error: cannot read {_source(name)}")
    return image


def object_variants():
    """64 object images: the 16 photographs as is, turned, inverted, channel-swapped."""
    photos = [_read(n) for n in OBJECTS]
    return (photos + [cv2.rotate(p, cv2.ROTATE_90_CLOCKWISE) for p in photos]
            + [255 - p for p in photos] + [np.ascontiguousarray(p[:, :, ::-1]) for p in photos])


def _overlaps(box, boxes):
    x, y, w, h = box
    for bx, by, bw, bh in boxes:
        inter = (max(0, min(x + w, bx + bw) - max(x, bx)) *
                 max(0, min(y + h, by + bh) - max(y, by)))
        if inter > MAX_OVERLAP * min(w * h, bw * bh):
            return True
    return False


def render(rng, objects, textures):
    """One image (H, W, 3) uint8 and its [(x, y, w, h, class index)], largest pasted first."""
    short = int(rng.integers(360, 513))
    height, width = (short, 640) if rng.random() < 0.6 else (640, short)
    image = cv2.resize(textures[rng.integers(len(textures))], (width, height)).astype(np.float32)
    image = np.clip(image * rng.uniform(0.6, 1.2) + rng.uniform(-30, 30, 3), 0, 255)
    count = int(rng.integers(1, 9)) if rng.random() < 0.85 else int(rng.integers(20, 41))
    sizes = np.sort(np.exp(rng.uniform(np.log(6), np.log(0.95 * min(height, width)), count)))
    boxes = []
    for size in sizes[::-1]:
        aspect = rng.uniform(0.6, 1.6)
        w = min(width - 1, int(max(4, size * np.sqrt(aspect))))
        h = min(height - 1, int(max(4, size / np.sqrt(aspect))))
        for _ in range(20):
            box = (int(rng.integers(0, width - w)), int(rng.integers(0, height - h)), w, h)
            if not _overlaps(box, [b[:4] for b in boxes]):
                break
        else:
            continue
        label = int(rng.integers(len(objects)))
        x, y = box[:2]
        image[y:y + h, x:x + w] = cv2.resize(objects[label], (w, h))
        boxes.append((*box, label))
    return image.astype(np.uint8), boxes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="dataset folder to write")
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    from simpledet.config.faster_rcnn import COCO_CLASS_NAMES

    rng = np.random.default_rng(args.seed)
    objects = object_variants()
    textures = [_read(n) for n in TEXTURES]
    images, annotations = [], []
    image_dir = os.path.join(args.out, "images", "train")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.join(args.out, "annotations"), exist_ok=True)
    for index in range(args.images):
        image, boxes = render(rng, objects, textures)
        image_id = 1000 + 7 * index  # not 1..N
        name = f"{index:04d}.jpg"
        cv2.imwrite(os.path.join(image_dir, name), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        images.append({"id": image_id, "file_name": name, "height": image.shape[0],
                       "width": image.shape[1]})
        for x, y, w, h, label in boxes:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": COCO_IDS[label], "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": 0,
                                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]})
    content = {"images": images, "annotations": annotations,
               "categories": [{"id": i, "name": n} for i, n in zip(COCO_IDS, COCO_CLASS_NAMES)]}
    for split in ("train", "val"):
        with open(os.path.join(args.out, "annotations", f"instances_{split}.json"), "w") as f:
            json.dump(content, f)
    val_dir = os.path.join(args.out, "images", "val")
    if not os.path.exists(val_dir):
        os.symlink("train", val_dir)
    print(f"{args.out}: {len(images)} images, {len(annotations)} boxes, "
          f"{len({a['category_id'] for a in annotations})} classes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
