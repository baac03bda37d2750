"""RetinaNet anchor targets as a loader assigner: retina_label, retina_target, retina_weight.

Every anchor of every level takes part (no sampling, no border rule: the focal loss weighs the
easy negatives down). Labelling (detectron2's RetinaNet matcher, SimpleDet's values), in the
"+1" box convention:

1. an anchor whose max IoU with the gt boxes is >= pos_thresh (0.5) is foreground, labelled
   with the class (1..C) of its best gt (the first of equals);
2. below neg_thresh (0.4) it is background (0); in between it is ignored (-1);
3. low-quality matches (``low_quality_matches``, detectron2's ``allow_low_quality_matches``):
   each gt's best anchors (all tied at that gt's max IoU, if it is > 0) are foreground too, still
   labelled with *their* best gt, so a gt no anchor reaches at pos_thresh keeps an anchor;
4. crowd regions (COCO iscrowd=1) are ignore regions: a background anchor covered by one of
   them more than crowd_iof of its own area becomes ignored (simpledet.data.anchor_target
   rule 5); foreground anchors keep their label.

Regression targets are ``simpledet.core.boxes.encode_boxes(anchor, matched gt)`` with means 0
and stds 1 (what ``simpledet.ops.retina_postprocess`` decodes with its default bbox_means /
bbox_stds) on the foreground anchors, with weight 1; everything else 0.

Layout (A = len(scales) * len(ratios), N = sum_l A * H_l * W_l; anchors from
``simpledet.data.anchor_target.level_anchors``, i.e. simpledet.core.anchors.grid_anchors, the
anchors the post-processing op makes): ``retina_label`` (N,) float32 in (level, a, y, x) order;
``retina_target`` / ``retina_weight`` (4N,) float32 in (level, a * 4 + k, y, x) order, the raw
layout of the head's (B, 4A, H_l, W_l) deltas concatenated over levels.

Speed: the IoUs come from anchor_target.label_anchors, which never builds the (N, G) matrix
(each gt only touches a small window of each level's grid): ~10 ms for 20 gt over the ~120k
anchors of an 800x1088 input, in a loader worker.
"""
import math

import numpy as np

from simpledet.core.boxes import encode_boxes
from simpledet.data.anchor_target import (
    channel_index,
    label_anchors,
    level_anchors,
    num_level_anchors,
)
from simpledet.data.targets.base import TargetAssigner

__all__ = ["RetinaAnchorAssigner", "assign_retina_targets"]


def _gt_xyxy(boxes):
    gt = np.asarray(boxes, dtype=np.float32)
    return gt.reshape(0, 4) if gt.size == 0 else gt.reshape(len(gt), -1)[:, :4]


def assign_retina_targets(gt_boxes, gt_classes, im_info, levels, scales, ratios, *,
                          pos_thresh=0.5, neg_thresh=0.4, low_quality_matches=True,
                          crowd_boxes=None, crowd_iof=0.5, out=None):
    """RetinaNet classification and regression targets of one image (module docstring rules).

    Args:
        gt_boxes: (G, >=4) [x1, y1, x2, y2, ...] in input pixels; G may be 0.
        gt_classes: (G,) labels 1..C.
        im_info: [height, width, scale] of the resized image (every anchor counts, also those
            over the padding: they are background unless a box reaches them).
        levels: [(stride, feat_h, feat_w)] of the head's levels (p3..p7).
        scales, ratios: the anchors (simpledet.core.anchors).
        pos_thresh, neg_thresh, low_quality_matches, crowd_iof: rules 1-4; crowd_iof None
            keeps anchors inside crowd regions background.
        crowd_boxes: None or (M, >=4) crowd regions in input pixels; M may be 0.
        out: optional dict of preallocated float32 arrays "labels" (N,), "targets" (4N,),
            "weights" (4N,) to fill (the loader passes slices of its batch arrays).

    Returns:
        {"labels": (N,) float32 in {-1, 0, 1..C}, "targets": (4N,) float32, "weights": (4N,)
        float32}, the layouts of the module docstring.
    """
    num_anchors = len(scales) * len(ratios)
    gt = _gt_xyxy(gt_boxes)
    classes = np.asarray(gt_classes, dtype=np.int64).reshape(-1)
    if len(classes) != len(gt):
        raise ValueError(f"{len(gt)} gt boxes but {len(classes)} gt classes")
    if len(classes) and classes.min() < 1:
        raise ValueError(f"gt classes must be >= 1 (0 is background), got {classes.min()}")
    labels, matched = label_anchors(
        gt, im_info, levels, scales, ratios, pos_thresh=pos_thresh, neg_thresh=neg_thresh,
        allowed_border=-1, min_pos_iou=0.0 if low_quality_matches else math.inf,
        crowd_boxes=crowd_boxes, crowd_iof=crowd_iof)
    count = len(labels)
    if out is None:
        out = {"labels": np.empty(count, dtype=np.float32),
               "targets": np.zeros(4 * count, dtype=np.float32),
               "weights": np.zeros(4 * count, dtype=np.float32)}
    else:
        for key, size in (("labels", count), ("targets", 4 * count), ("weights", 4 * count)):
            if out[key].shape != (size,):
                raise ValueError(f"out[{key!r}] has shape {out[key].shape}, expected ({size},)")
        out["targets"].fill(0)
        out["weights"].fill(0)
    positive = np.flatnonzero(labels == 1)
    np.copyto(out["labels"], labels, casting="unsafe")
    if len(positive):
        out["labels"][positive] = classes[matched[positive]]
        anchors = level_anchors(levels, scales, ratios)
        deltas = encode_boxes(anchors[positive], gt[matched[positive]])
        index = channel_index(positive, levels, num_anchors)  # (P, 4)
        out["targets"][index] = deltas
        out["weights"][index] = 1.0
    return out


class RetinaAnchorAssigner(TargetAssigner):
    """RetinaNet's targets of the anchors of every head level (see the module docstring).

    Args:
        levels_fn: (bucket_h, bucket_w) -> [(stride, feat_h, feat_w)]; must pickle for worker
            processes (a table of simpledet.data.targets.levels_table, or functools.partial of
            anchor_target.feature_levels).
        scales, ratios: anchor shapes.
        pos_thresh, neg_thresh, low_quality_matches, crowd_iof: the labelling rules.
    """

    names = ("retina_label", "retina_target", "retina_weight")

    def __init__(self, levels_fn, scales, ratios, *, pos_thresh=0.5, neg_thresh=0.4,
                 low_quality_matches=True, crowd_iof=0.5):
        if not callable(levels_fn):
            raise TypeError(f"levels_fn must be callable, got {type(levels_fn).__name__}")
        if not scales or not ratios:
            raise ValueError(f"anchor scales and ratios must not be empty, got {scales}, "
                             f"{ratios}")
        if neg_thresh > pos_thresh:
            raise ValueError(f"neg_thresh ({neg_thresh}) must be <= pos_thresh ({pos_thresh})")
        self.levels_fn = levels_fn
        self.scales = tuple(float(s) for s in scales)
        self.ratios = tuple(float(r) for r in ratios)
        self.pos_thresh, self.neg_thresh = float(pos_thresh), float(neg_thresh)
        self.low_quality_matches = bool(low_quality_matches)
        self.crowd_iof = crowd_iof

    @classmethod
    def from_config(cls, anchor_cfg, target_cfg, levels_fn):
        """The assigner of a config's ``anchors`` and ``targets`` sections
        (simpledet.config.retinanet)."""
        return cls(levels_fn, anchor_cfg.scales, anchor_cfg.ratios,
                   pos_thresh=target_cfg.pos_iou, neg_thresh=target_cfg.neg_iou,
                   low_quality_matches=target_cfg.low_quality_matches,
                   crowd_iof=target_cfg.crowd_iof)

    def levels(self, bucket_h, bucket_w):
        """[(stride, feat_h, feat_w)] of the head levels of a bucket."""
        return self.levels_fn(bucket_h, bucket_w)

    def num_anchors(self, bucket_h, bucket_w):
        """N, the anchors of a bucket (the length of retina_label)."""
        return num_level_anchors(self.levels(bucket_h, bucket_w), self.scales, self.ratios)

    def outputs(self, bucket_h, bucket_w):
        num = int(self.num_anchors(bucket_h, bucket_w))
        return {"retina_label": ((num,), np.float32), "retina_target": ((4 * num,), np.float32),
                "retina_weight": ((4 * num,), np.float32)}

    def assign(self, sample, rng, out):
        """Fills the three arrays; draws nothing from ``rng`` (no sampling)."""
        assign_retina_targets(
            sample.boxes, sample.classes, sample.im_info, self.levels(*sample.bucket),
            self.scales, self.ratios, pos_thresh=self.pos_thresh, neg_thresh=self.neg_thresh,
            low_quality_matches=self.low_quality_matches, crowd_boxes=sample.crowd_boxes,
            crowd_iof=self.crowd_iof,
            out={"labels": out["retina_label"], "targets": out["retina_target"],
                 "weights": out["retina_weight"]})

    def __repr__(self):
        return (f"RetinaAnchorAssigner(scales={self.scales}, ratios={self.ratios}, "
                f"pos_thresh={self.pos_thresh}, neg_thresh={self.neg_thresh}, "
                f"low_quality_matches={self.low_quality_matches}, crowd_iof={self.crowd_iof})")
