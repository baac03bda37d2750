"""TridentNet's scale-aware RPN anchor targets: one set of RPN targets per branch.

TridentNet (Li et al., 2019) stacks its K branches along the batch axis, so the RPN loss needs
K label maps per image, each made for the gt boxes inside its branch's valid range. The gt
boxes of an image are known here, and the anchors per branch are the same anchors of the one
c4 level, so the loader makes them (the graph's own filtering, of the gt rows and sampled RoIs
the box head trains on, is in simpledet.detectors.tridentnet).

Rules, per image (the Faster R-CNN rules of simpledet.data.anchor_target, then per branch k):

1. the anchors are labelled once against all gt boxes (and crowd regions);
2. a gt box is in range k when sqrt of its "+1" area is in [lo_k, hi_k] (hi_k < 0: no upper
   bound), the rule of :func:`in_valid_range`, which the graph uses too;
3. branch k ignores (-1) every anchor whose IoU with a gt outside range k is above
   ``invalid_iou`` (SimpleDet's ``invalid_anchor_threshd`` 0.3), and every positive anchor
   matched to such a gt (so no branch regresses towards an object it must not learn);
4. each branch samples its own batch_size anchors (fg_fraction positive) from the image's
   random stream, branch 0 first, and gets targets and weights as the RPN.
"""
import numpy as np

from simpledet.data.anchor_target import (
    anchor_max_iou,
    fill_anchor_targets,
    label_anchors,
    subsample_labels,
)
from simpledet.data.targets.rpn import RpnAnchorAssigner

__all__ = ["TridentAnchorAssigner", "check_valid_ranges", "in_valid_range"]


def check_valid_ranges(valid_ranges):
    """The ranges as a tuple of (lo, hi) float pairs; raises ValueError naming the bad entry
    (lo < 0, or hi >= 0 and hi <= lo)."""
    out = []
    for k, pair in enumerate(valid_ranges):
        if len(pair) != 2:
            raise ValueError(f"valid_ranges[{k}] must be (lo, hi), got {pair!r}")
        lo, hi = float(pair[0]), float(pair[1])
        if lo < 0 or (hi >= 0 and hi <= lo):
            raise ValueError(f"valid_ranges[{k}] = {pair!r}: need 0 <= lo < hi, or hi < 0 for "
                             f"no upper bound")
        out.append((lo, hi))
    if not out:
        raise ValueError("valid_ranges must hold one (lo, hi) per branch")
    return tuple(out)


def in_valid_range(boxes, lo, hi):
    """(G,) bool: boxes [x1, y1, x2, y2, ...] whose sqrt("+1" area) is in [lo, hi] (hi < 0: no
    upper bound), i.e. lo^2 <= (x2 - x1 + 1) * (y2 - y1 + 1) <= hi^2."""
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.size == 0:
        return np.zeros(0, dtype=bool)
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep = area >= np.float32(lo) ** 2
    if hi >= 0:
        keep &= area <= np.float32(hi) ** 2
    return keep


class TridentAnchorAssigner(RpnAnchorAssigner):
    """RPN targets of every Trident branch (module docstring).

    Outputs for a bucket with N anchors and K = len(valid_ranges) branches: ``rpn_label``
    (K, N), ``rpn_target`` and ``rpn_weight`` (K, 4N), float32, row k in the layout of
    RpnAnchorAssigner; the graph reshapes the batch's (B, K, ...) to (B*K, ...), image-major,
    the order of the stacked branches.

    Args:
        levels_fn, scales, ratios and the keyword arguments of RpnAnchorAssigner.
        valid_ranges: ((lo, hi), ...) one per branch, in input pixels (sqrt of box area).
        invalid_iou: anchors with IoU above this with a gt outside a branch's range are
            ignored by that branch.
    """

    def __init__(self, levels_fn, scales, ratios, *, valid_ranges, invalid_iou=0.3, **kwargs):
        super().__init__(levels_fn, scales, ratios, **kwargs)
        self.valid_ranges = check_valid_ranges(valid_ranges)
        if not 0.0 <= invalid_iou <= 1.0:
            raise ValueError(f"invalid_iou must be in [0, 1], got {invalid_iou}")
        self.invalid_iou = float(invalid_iou)

    @classmethod
    def from_config(cls, rpn, levels_fn, valid_ranges=((0.0, -1.0),), invalid_iou=0.3):
        """The assigner of a config's ``rpn`` section and the branches' ranges."""
        return cls(levels_fn, tuple(rpn.anchor_scales), tuple(rpn.anchor_ratios),
                   pos_thresh=rpn.pos_iou, neg_thresh=rpn.neg_iou,
                   batch_size=rpn.batch_per_image, fg_fraction=rpn.fg_fraction,
                   allowed_border=rpn.allowed_border, min_pos_iou=rpn.min_pos_iou,
                   valid_ranges=valid_ranges, invalid_iou=invalid_iou)

    @property
    def num_branches(self):
        return len(self.valid_ranges)

    def outputs(self, bucket_h, bucket_w):
        num, k = int(self.num_anchors(bucket_h, bucket_w)), self.num_branches
        return {"rpn_label": ((k, num), np.float32), "rpn_target": ((k, 4 * num), np.float32),
                "rpn_weight": ((k, 4 * num), np.float32)}

    def branch_labels(self, sample, rng):
        """[(labels (N,) int8 after sampling, matched (N,))] per branch, drawing from rng."""
        levels = self.levels(*sample.bucket)
        boxes = np.asarray(sample.boxes, dtype=np.float32).reshape(-1, 4)
        labels, matched = label_anchors(
            boxes, sample.im_info, levels, self.scales, self.ratios,
            pos_thresh=self.pos_thresh, neg_thresh=self.neg_thresh,
            allowed_border=self.allowed_border, min_pos_iou=self.min_pos_iou,
            crowd_boxes=sample.crowd_boxes, crowd_iof=self.crowd_iof)
        out = []
        for lo, hi in self.valid_ranges:
            branch = labels.copy()
            outside = ~in_valid_range(boxes, lo, hi)
            if outside.any():
                iou = anchor_max_iou(boxes[outside], sample.im_info, levels, self.scales,
                                     self.ratios, allowed_border=self.allowed_border)
                branch[iou > self.invalid_iou] = -1
                positive = branch == 1
                branch[positive & outside[np.maximum(matched, 0)]] = -1
            out.append((subsample_labels(branch, self.batch_size, self.fg_fraction, rng),
                        matched))
        return out

    def assign(self, sample, rng, out):
        levels = self.levels(*sample.bucket)
        boxes = np.asarray(sample.boxes, dtype=np.float32).reshape(-1, 4)
        for k, (labels, matched) in enumerate(self.branch_labels(sample, rng)):
            fill_anchor_targets(labels, matched, boxes, levels, self.scales, self.ratios,
                                {"labels": out["rpn_label"][k], "targets": out["rpn_target"][k],
                                 "weights": out["rpn_weight"][k]})

    def __repr__(self):
        return (f"TridentAnchorAssigner(valid_ranges={self.valid_ranges}, invalid_iou="
                f"{self.invalid_iou}, {super().__repr__()})")
