"""RPN anchor targets as a loader assigner: rpn_label, rpn_target, rpn_weight.

The rules and the output layout are simpledet.data.anchor_target's (py-faster-rcnn's
AnchorTargetLayer, crowd regions as ignore regions for negatives); this file only says which
arrays they fill and where the anchor levels of a bucket come from.
"""
import functools

import numpy as np

from simpledet.data.anchor_target import assign_anchor_targets, num_level_anchors
from simpledet.data.targets.base import TargetAssigner

__all__ = ["RpnAnchorAssigner", "levels_table"]


def _levels_from_table(table, bucket_h, bucket_w):
    try:
        return table[(int(bucket_h), int(bucket_w))]
    except KeyError:
        raise KeyError(f"no RPN feature sizes for bucket {bucket_h}x{bucket_w}; known buckets: "
                       f"{sorted(table)}") from None


def levels_table(levels_of, buckets):
    """A picklable levels_fn: ``levels_of(bucket_h, bucket_w)`` (e.g. a detector's rpn_levels,
    from infer_shape) computed once per bucket, so worker processes need no graph."""
    table = {tuple(int(v) for v in b): [tuple(int(v) for v in level)
                                        for level in levels_of(*b)] for b in buckets}
    return functools.partial(_levels_from_table, table)


class RpnAnchorAssigner(TargetAssigner):
    """RPN classification and regression targets of the anchors of every RPN level.

    Outputs for a bucket with N = sum_l A * H_l * W_l anchors (A = scales x ratios):
    ``rpn_label`` (N,) float32 in {1, 0, -1} in (level, a, y, x) order; ``rpn_target`` and
    ``rpn_weight`` (4N,) float32 in (level, a*4+k, y, x) order (see
    simpledet.data.anchor_target.assign_anchor_targets, which fills them with ``rng``).

    Args:
        levels_fn: (bucket_h, bucket_w) -> [(stride, feat_h, feat_w)]; must pickle for worker
            processes (a table of :func:`levels_table`, or functools.partial of
            anchor_target.feature_levels).
        scales, ratios: anchor shapes (simpledet.core.anchors).
        pos_thresh, neg_thresh, batch_size, fg_fraction, allowed_border, min_pos_iou,
            crowd_iof: the labelling and sampling rules of simpledet.data.anchor_target;
            crowd_iof None keeps anchors inside crowd regions negative.
    """

    names = ("rpn_label", "rpn_target", "rpn_weight")

    def __init__(self, levels_fn, scales, ratios, *, pos_thresh=0.7, neg_thresh=0.3,
                 batch_size=256, fg_fraction=0.5, allowed_border=0, min_pos_iou=0.0,
                 crowd_iof=0.5):
        if not callable(levels_fn):
            raise TypeError(f"levels_fn must be callable, got {type(levels_fn).__name__}")
        if not scales or not ratios:
            raise ValueError(f"anchor scales and ratios must not be empty, got {scales}, "
                             f"{ratios}")
        self.levels_fn = levels_fn
        self.scales = tuple(scales)
        self.ratios = tuple(ratios)
        self.pos_thresh, self.neg_thresh = pos_thresh, neg_thresh
        self.batch_size, self.fg_fraction = batch_size, fg_fraction
        self.allowed_border, self.min_pos_iou = allowed_border, min_pos_iou
        self.crowd_iof = crowd_iof

    @classmethod
    def from_config(cls, rpn, levels_fn):
        """The assigner of a config's ``rpn`` section (simpledet.config.faster_rcnn.RpnConfig)."""
        return cls(levels_fn, tuple(rpn.anchor_scales), tuple(rpn.anchor_ratios),
                   pos_thresh=rpn.pos_iou, neg_thresh=rpn.neg_iou,
                   batch_size=rpn.batch_per_image, fg_fraction=rpn.fg_fraction,
                   allowed_border=rpn.allowed_border, min_pos_iou=rpn.min_pos_iou)

    def levels(self, bucket_h, bucket_w):
        """[(stride, feat_h, feat_w)] of the RPN levels of a bucket."""
        return self.levels_fn(bucket_h, bucket_w)

    def num_anchors(self, bucket_h, bucket_w):
        """N, the anchors of a bucket (the length of rpn_label)."""
        return num_level_anchors(self.levels(bucket_h, bucket_w), self.scales, self.ratios)

    def outputs(self, bucket_h, bucket_w):
        num = int(self.num_anchors(bucket_h, bucket_w))
        return {"rpn_label": ((num,), np.float32), "rpn_target": ((4 * num,), np.float32),
                "rpn_weight": ((4 * num,), np.float32)}

    def assign(self, sample, rng, out):
        assign_anchor_targets(
            sample.boxes, sample.im_info, self.levels(*sample.bucket), self.scales, self.ratios,
            pos_thresh=self.pos_thresh, neg_thresh=self.neg_thresh, batch_size=self.batch_size,
            fg_fraction=self.fg_fraction, allowed_border=self.allowed_border,
            min_pos_iou=self.min_pos_iou, crowd_boxes=sample.crowd_boxes,
            crowd_iof=self.crowd_iof, rng=rng,
            out={"labels": out["rpn_label"], "targets": out["rpn_target"],
                 "weights": out["rpn_weight"]})

    def __repr__(self):
        return (f"RpnAnchorAssigner(scales={self.scales}, ratios={self.ratios}, "
                f"pos_thresh={self.pos_thresh}, neg_thresh={self.neg_thresh}, "
                f"batch_size={self.batch_size}, fg_fraction={self.fg_fraction}, "
                f"allowed_border={self.allowed_border}, min_pos_iou={self.min_pos_iou}, "
                f"crowd_iof={self.crowd_iof})")
