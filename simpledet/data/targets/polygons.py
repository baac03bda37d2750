"""The gt polygons of Mask R-CNN's mask targets as a loader assigner: ``gt_polys``.

Row j of an image's ``gt_polys`` holds the polygons of its gt box j (the loader's ``gt_boxes``
row j: both keep the record's first max_gt objects, in record order), resized and flipped like
the image, in the padded layout of simpledet.core.masks.encode_polygons; the graph's mask-target
op (simpledet.ops.mask_target) rasterises them inside each foreground RoI.

Objects whose segmentation is an RLE dict (non-crowd RLE, rare outside COCO's crowd regions)
are turned into polygons by tracing the outer contours of the decoded mask (holes are filled);
objects without a segmentation get a row without polygons, which the mask loss ignores.
"""
import numpy as np

from simpledet.core.masks import encode_polygons
from simpledet.data.targets.base import TargetAssigner

__all__ = ["GtPolygonAssigner", "rle_to_polygons"]


def rle_to_polygons(rle):
    """Flat [x0, y0, ...] polygons (pixel centres, continuous coordinates) of the outer
    contours of a COCO RLE dict (compressed or not); contours of fewer than 3 points are
    dropped."""
    import cv2
    from pycocotools import mask as mask_utils

    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    mask = np.ascontiguousarray(mask_utils.decode(rle), dtype=np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [(c.reshape(-1, 2).astype(np.float64) + 0.5).ravel().tolist()
            for c in contours if len(c) >= 3]


def input_polygons(segmentation, scale, flip_width=None):
    """One object's polygons in network-input pixels: scaled by ``scale`` and, when
    ``flip_width`` is given, mirrored x' = flip_width - x (continuous coordinates).

    Args:
        segmentation: a COCO polygon list (flat [x0, y0, ...] lists) or an RLE dict, in
            original-image pixels; an empty list for none.

    Returns:
        list of float64 arrays (flat x, y pairs).
    """
    if isinstance(segmentation, dict):
        segmentation = rle_to_polygons(segmentation)
    out = []
    for poly in segmentation:
        poly = np.asarray(poly, dtype=np.float64).reshape(-1) * float(scale)
        if flip_width is not None:
            poly[0::2] = float(flip_width) - poly[0::2]
        out.append(poly)
    return out


class GtPolygonAssigner(TargetAssigner):
    """Fills ``gt_polys`` (max_gt, poly_len) float32 per image (see the module docstring).

    Args:
        max_gt: gt rows per image (``cfg.input.max_num_gt``: the rows of ``gt_boxes``).
        poly_len: floats per row (``cfg.mask_target.poly_len``).
    """

    names = ("gt_polys",)

    def __init__(self, max_gt, poly_len):
        self.max_gt = int(max_gt)
        self.poly_len = int(poly_len)

    @classmethod
    def from_config(cls, input_cfg, mask_target_cfg):
        """From the ``input`` (max_num_gt) and ``mask_target`` (poly_len) sections."""
        return cls(input_cfg.max_num_gt, mask_target_cfg.poly_len)

    def outputs(self, bucket_h, bucket_w):
        return {"gt_polys": ((self.max_gt, self.poly_len), np.float32)}

    def assign(self, sample, rng, out):
        record = sample.record or {}
        segmentations = list(record.get("segmentations") or ())
        count = min(len(sample.boxes), self.max_gt)
        flip_width = float(sample.im_info[1]) if sample.flipped else None
        scale = float(sample.im_info[2])
        polygons = [input_polygons(segmentations[j], scale, flip_width)
                    if j < len(segmentations) else [] for j in range(count)]
        out["gt_polys"][...] = encode_polygons(polygons, self.max_gt, self.poly_len)
