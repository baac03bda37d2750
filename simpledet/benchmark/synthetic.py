"""One fixed synthetic batch, built once before timing, so the benchmark times the graph and not
image decoding, resizing or target assignment (the loader has its own benchmark,
scripts/bench_loader.py).

The batch is what the loader would give for random images of exactly the benchmark size (so no
resize is needed): random RGB pixels normalized with the config's pixel mean/std and padded to
the bucket, a few random ground-truth boxes, each with one polygon (the ellipse inscribed in
the box, ``POLYGON_VERTICES`` vertices), and the targets of the detector's own assigners
(``target_assigners``: for Faster R-CNN the RPN anchor targets of the config's RPN settings;
Mask R-CNN adds ``gt_polys``, filled from the polygons through the image's record as the
loader does). The GluonCV peer gets the same raw images, boxes and polygons and makes its own
targets (see simpledet.benchmark.gluoncv_peer).

For the inference post-processing (Mask R-CNN: pasting masks into the image and RLE-encoding
them), :func:`make_detections` gives a fixed set of detections both toolboxes decode, so the
cost does not depend on how many detections random weights happen to produce.
"""
from dataclasses import dataclass

import numpy as np

from simpledet.data.layout import batch_layout
from simpledet.data.targets import ImageSample
from simpledet.data.transforms import normalize_pad_chw

BOXES_PER_IMAGE = 4
POLYGON_VERTICES = 16


@dataclass
class SyntheticImages:
    """Raw images and their ground truth, shared by our model and the peer.

    Attributes:
        images: list of (H, W, 3) uint8 RGB arrays.
        boxes: list of (G, 4) float32 [x1, y1, x2, y2] in pixels ("+1" convention).
        classes: list of (G,) int labels in 1..num_classes-1 (0 is background).
        polygons: list (per image) of G segmentations, each a list of one flat
            [x0, y0, x1, y1, ...] float64 polygon (COCO continuous coordinates, see
            simpledet.core.masks) whose bounding region is the box's (``box_polygon``).
    """

    images: list
    boxes: list
    classes: list
    polygons: list

    def head(self, count):
        """The first ``count`` images and their ground truth."""
        return SyntheticImages(self.images[:count], self.boxes[:count], self.classes[:count],
                               self.polygons[:count])

    @property
    def height(self):
        return self.images[0].shape[0]

    @property
    def width(self):
        return self.images[0].shape[1]


def random_boxes(rng, height, width, count):
    """``count`` boxes of 10-60% of each side, inside the image: (count, 4) float32."""
    box_h = rng.uniform(0.1, 0.6, count) * height
    box_w = rng.uniform(0.1, 0.6, count) * width
    y1 = rng.uniform(0, height - box_h)
    x1 = rng.uniform(0, width - box_w)
    return np.stack([x1, y1, x1 + box_w - 1, y1 + box_h - 1], axis=1).astype(np.float32)


def box_polygon(box, vertices=POLYGON_VERTICES):
    """The ellipse inscribed in a "+1" box as one flat polygon [x0, y0, x1, y1, ...] (float64).

    The box covers the continuous region [x1, x2 + 1) x [y1, y2 + 1); the vertices are at angles
    2 pi k / vertices from 0 (``vertices`` a multiple of 4), so the polygon touches the four
    sides of that region and its bounding region is exactly the box's.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    center_x, center_y = (x1 + x2 + 1.0) / 2.0, (y1 + y2 + 1.0) / 2.0
    angles = 2.0 * np.pi * np.arange(vertices) / vertices
    points = np.stack([center_x + (x2 - x1 + 1.0) / 2.0 * np.cos(angles),
                       center_y + (y2 - y1 + 1.0) / 2.0 * np.sin(angles)], axis=1)
    return points.ravel()


def make_images(batch, height, width, num_classes, seed=0, boxes_per_image=BOXES_PER_IMAGE):
    """``batch`` random images with ``boxes_per_image`` random boxes each, one polygon per box."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(batch)]
    boxes = [random_boxes(rng, height, width, boxes_per_image) for _ in range(batch)]
    classes = [rng.integers(1, num_classes, boxes_per_image) for _ in range(batch)]
    polygons = [[[box_polygon(box)] for box in image_boxes] for image_boxes in boxes]
    return SyntheticImages(images=images, boxes=boxes, classes=classes, polygons=polygons)


@dataclass
class SyntheticDetections:
    """Detections of one image, in the layout both toolboxes' test graphs produce.

    Attributes:
        boxes: (D, 4) float32 "+1" boxes [x1, y1, x2, y2] in input pixels (scale 1).
        scores: (D,) float32 in [0.05, 1), descending.
        classes: (D,) int labels in 1..num_classes-1.
        masks: (D, M, M) float32 probabilities in each box's frame: one elliptic blob each.
    """

    boxes: np.ndarray
    scores: np.ndarray
    classes: np.ndarray
    masks: np.ndarray


def make_detections(count, height, width, num_classes, mask_size, seed=0):
    """``count`` detections on an height x width image, each with an M x M mask probability map
    (a blob: 1 at the centre of the box frame, falling below 0.5 on an ellipse of random radii
    0.3-0.5 of the frame)."""
    rng = np.random.default_rng(seed)
    boxes = random_boxes(rng, height, width, count)
    scores = np.sort(rng.uniform(0.05, 1.0, count))[::-1].astype(np.float32)
    classes = rng.integers(1, num_classes, count)
    cells = (np.arange(mask_size) + 0.5) / mask_size - 0.5  # -0.5..0.5 across the frame
    radius_x = rng.uniform(0.3, 0.5, (count, 1, 1))
    radius_y = rng.uniform(0.3, 0.5, (count, 1, 1))
    distance = (cells[None, None, :] / radius_x) ** 2 + (cells[None, :, None] / radius_y) ** 2
    masks = np.clip(1.0 - 0.5 * distance, 0.0, 1.0).astype(np.float32)
    return SyntheticDetections(boxes=boxes, scores=scores, classes=classes, masks=masks)


def inference_batch(cfg, sample, bucket):
    """{"data", "im_info"} of the test graph: normalized, padded images at scale 1."""
    size = len(sample.images)
    layout = batch_layout(size, *bucket, cfg.input.max_num_gt)
    data = np.zeros(*layout["data"])
    for slot, image in enumerate(sample.images):
        normalize_pad_chw(image, cfg.backbone.pixel_mean, cfg.backbone.pixel_std, bucket,
                          out=data[slot])
    im_info = np.tile(np.array([[sample.height, sample.width, 1.0]], np.float32), (size, 1))
    return {"data": data, "im_info": im_info}


def training_batch(cfg, assigners, sample, bucket, seed=0):
    """The training inputs the loader would build for ``sample`` (the layout of
    simpledet.data.layout): data, im_info, gt_boxes padded with -1, then the assigners' arrays
    (Faster R-CNN: rpn_label/target/weight; Mask R-CNN also gt_polys). Each image reaches the
    assigners as the loader hands it over: an ImageSample at scale 1, not flipped, whose record
    carries the polygons as "segmentations" (one per box, in box order).

    Args:
        cfg: the frozen config (input.max_num_gt, backbone pixel mean/std).
        assigners: the detector's ``target_assigners([bucket])``.
        sample: SyntheticImages.
        bucket: (Hb, Wb) padded input shape.
        seed: seeds the one random stream all images' assigners draw from.
    """
    batch = inference_batch(cfg, sample, bucket)
    layout = batch_layout(len(sample.images), *bucket, cfg.input.max_num_gt, assigners)
    for name in ("gt_boxes", *(n for a in assigners for n in a.names)):
        shape, dtype = layout[name]
        batch[name] = np.full(shape, -1 if name == "gt_boxes" else 0, dtype=dtype)
    rng = np.random.default_rng(seed)
    for slot, (boxes, classes, polygons) in enumerate(zip(sample.boxes, sample.classes,
                                                          sample.polygons)):
        kept = min(len(boxes), cfg.input.max_num_gt)
        batch["gt_boxes"][slot, :kept, :4] = boxes[:kept]
        batch["gt_boxes"][slot, :kept, 4] = classes[:kept]
        record = {"height": sample.height, "width": sample.width,
                  "segmentations": [list(polygon) for polygon in polygons]}
        image = ImageSample(boxes=np.asarray(boxes, np.float32), classes=classes,
                            crowd_boxes=np.zeros((0, 4), np.float32),
                            im_info=batch["im_info"][slot], bucket=tuple(bucket), record=record)
        for assigner in assigners:
            assigner.assign(image, rng, {name: batch[name][slot] for name in assigner.names})
    return batch
