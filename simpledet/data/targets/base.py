"""The assigner interface: what the loader asks of a training-target assigner.

An assigner is a picklable object (worker processes receive it) that

- names the arrays it fills (``names``, a tuple: the graph inputs they feed);
- declares, for a padded bucket (Hb, Wb), the arrays it fills for one image:
  ``outputs(bucket_h, bucket_w) -> {name: (per-image shape, dtype)}``; the batch holds each as
  (B, *shape) (simpledet.data.layout.batch_layout), named as the detector's graph inputs;
- fills them for one image: ``assign(sample, rng, out)``, ``out`` being {name: the image's
  writable slice of the batch array}; every element must be written (batch memory is reused).
  It may return {counter name: count} of what it had to leave out (e.g. crowd regions beyond
  its rows); the loader sums them in ``DetectionLoader.target_counts`` and warns the first time
  each counter is non-zero, with the text of the assigner's ``counters`` {name: description}.

``rng`` is the image's np.random.Generator, the one the loader drew the scale and the flip from;
assigners draw from it in the detector's order, so batches stay a function of the seed.
"""
from dataclasses import dataclass

import numpy as np

__all__ = ["ImageSample", "TargetAssigner"]


@dataclass(frozen=True)
class ImageSample:
    """One training image after resize and flip, as the assigners see it.

    Attributes:
        boxes: (G, 4) float32 [x1, y1, x2, y2] "+1" gt boxes in input pixels (all of them, not
            truncated to max_gt).
        classes: (G,) int32 labels 1..K-1.
        crowd_boxes: (M, 4) float32 crowd (iscrowd) regions in input pixels, resized and flipped
            like the boxes; M may be 0.
        im_info: (3,) [input height, input width, scale] of the resized image.
        bucket: (Hb, Wb) the padded input shape.
        flipped: whether the image was mirrored (x' = w - 1 - x, w = im_info[1]).
        record: the compact record (original pixels: its "segmentations" are polygon lists or
            RLE dicts of the original image, one per box), for assigners that need more.
    """

    boxes: np.ndarray
    classes: np.ndarray
    crowd_boxes: np.ndarray
    im_info: np.ndarray
    bucket: tuple
    flipped: bool = False
    record: dict = None


class TargetAssigner:
    """Base of the assigners (see the module docstring); subclasses set ``names`` and implement
    both methods."""

    names = ()
    counters = {}

    def outputs(self, bucket_h, bucket_w):
        """{name: (per-image shape, dtype)} of the arrays this assigner fills for a bucket, in
        ``names`` order."""
        raise NotImplementedError

    def assign(self, sample, rng, out):
        """Fills ``out`` ({name: per-image array of ``outputs``}) for one ImageSample; returns
        None or {counter name (a key of ``counters``): count} for this image."""
        raise NotImplementedError
