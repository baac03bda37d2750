"""An image's crowd (iscrowd) regions as a loader assigner: ``gt_crowd``.

The RoI sampler (simpledet.ops.proposal_target, ``crowd_boxes``) ignores a proposal that would
be background when a crowd region covers more than ``roi_sampler.crowd_iof`` of it (Detectron's
crowd_thresh); the RPN anchor assigner reads the same regions from the ImageSample.

Rows are the regions in network-input pixels ("+1" [x1, y1, x2, y2], resized and flipped like
the gt boxes: ImageSample.crowd_boxes), in record order, then padding rows of -1. An image with
more than ``max_crowd`` regions keeps the ``max_crowd`` largest (by input-pixel area; ties keep
the earlier record row) and reports the others as the counter ``truncated_crowd``, which the
loader sums in ``DetectionLoader.target_counts`` and warns about once.
"""
import numpy as np

from simpledet.data.targets.base import TargetAssigner

__all__ = ["CrowdRegionAssigner"]


class CrowdRegionAssigner(TargetAssigner):
    """Fills ``gt_crowd`` (max_crowd, 4) float32 per image (see the module docstring).

    Args:
        max_crowd: crowd rows per image (``cfg.input.max_num_crowd``), >= 1 (MXNet 1.x extension
            ops take no zero-size input).
    """

    names = ("gt_crowd",)
    counters = {"truncated_crowd": "crowd regions beyond input.max_num_crowd dropped (each "
                                   "image keeps its largest)"}

    def __init__(self, max_crowd):
        if isinstance(max_crowd, bool) or int(max_crowd) != max_crowd or max_crowd < 1:
            raise ValueError(f"max_crowd must be an int >= 1, got {max_crowd!r}")
        self.max_crowd = int(max_crowd)

    @classmethod
    def from_config(cls, input_cfg):
        """From the ``input`` section (max_num_crowd)."""
        return cls(input_cfg.max_num_crowd)

    def outputs(self, bucket_h, bucket_w):
        return {"gt_crowd": ((self.max_crowd, 4), np.float32)}

    def assign(self, sample, rng, out):
        """Writes the rows; returns {"truncated_crowd": dropped} when regions were dropped."""
        crowd = np.asarray(sample.crowd_boxes, dtype=np.float32).reshape(-1, 4)
        rows = out["gt_crowd"]
        rows.fill(-1)
        dropped = len(crowd) - self.max_crowd
        if dropped > 0:
            one = np.float32(1)
            area = (crowd[:, 2] - crowd[:, 0] + one) * (crowd[:, 3] - crowd[:, 1] + one)
            largest = np.argsort(-area, kind="stable")[:self.max_crowd]
            crowd = crowd[np.sort(largest)]
        rows[:len(crowd)] = crowd
        return {"truncated_crowd": dropped} if dropped > 0 else None

    def __repr__(self):
        return f"CrowdRegionAssigner(max_crowd={self.max_crowd})"
