"""One fixed synthetic batch, built once before timing, so the benchmark times the graph and not
image decoding, resizing or target assignment (the loader has its own benchmark,
scripts/bench_loader.py).

The batch is what the loader would give for random images of exactly the benchmark size (so no
resize is needed): random RGB pixels normalized with the config's pixel mean/std and padded to
the bucket, a few random ground-truth boxes, and the targets of the detector's own assigners
(``target_assigners``: for Faster R-CNN the RPN anchor targets of the config's RPN settings).
The GluonCV peer gets the same raw images and boxes and makes its own targets (see
simpledet.benchmark.gluoncv_peer).
"""
from dataclasses import dataclass

import numpy as np

from simpledet.data.layout import batch_layout
from simpledet.data.targets import ImageSample
from simpledet.data.transforms import normalize_pad_chw

BOXES_PER_IMAGE = 4


@dataclass
class SyntheticImages:
    """Raw images and their ground truth, shared by our model and the peer.

    Attributes:
        images: list of (H, W, 3) uint8 RGB arrays.
        boxes: list of (G, 4) float32 [x1, y1, x2, y2] in pixels ("+1" convention).
        classes: list of (G,) int labels in 1..num_classes-1 (0 is background).
    """

    images: list
    boxes: list
    classes: list

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


def make_images(batch, height, width, num_classes, seed=0, boxes_per_image=BOXES_PER_IMAGE):
    """``batch`` random images with ``boxes_per_image`` random boxes each."""
    rng = np.random.default_rng(seed)
    return SyntheticImages(
        images=[rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(batch)],
        boxes=[random_boxes(rng, height, width, boxes_per_image) for _ in range(batch)],
        classes=[rng.integers(1, num_classes, boxes_per_image) for _ in range(batch)])


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
    (Faster R-CNN: rpn_label/target/weight).

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
    for slot, (boxes, classes) in enumerate(zip(sample.boxes, sample.classes)):
        kept = min(len(boxes), cfg.input.max_num_gt)
        batch["gt_boxes"][slot, :kept, :4] = boxes[:kept]
        batch["gt_boxes"][slot, :kept, 4] = classes[:kept]
        image = ImageSample(boxes=np.asarray(boxes, np.float32), classes=classes,
                            crowd_boxes=np.zeros((0, 4), np.float32),
                            im_info=batch["im_info"][slot], bucket=tuple(bucket))
        for assigner in assigners:
            assigner.assign(image, rng, {name: batch[name][slot] for name in assigner.names})
    return batch
