"""The RPN head contract (SimpleDet's ``rpn_head.get_loss() / get_sampled_proposal()``).

Layouts (A anchors per location, levels in ascending stride, as the neck's rpn features):

- ``get_output(features)`` -> ``(cls_logits, bbox_deltas)``: per level l, cls_logits[l]
  (B, A, H_l, W_l) foreground logits of anchor a at (y, x) and bbox_deltas[l] (B, 4A, H_l, W_l),
  channel a * 4 + k = delta k (dx, dy, dw, dh; not normalized) of anchor a. Anchor a is ratio
  a // len(scales), scale a % len(scales) (``simpledet.core.anchors``).
- ``get_loss(cls_logits, bbox_deltas, rpn_label, rpn_target, rpn_weight)`` -> {loss name:
  (1,) Symbol}. rpn_label (B, N), N = sum_l A * H_l * W_l in (level, a, y, x) order (1 fg,
  0 bg, -1 ignored); rpn_target / rpn_weight (B, 4N) in (level, a * 4 + k, y, x) order: the
  loader's layout (``simpledet.data.anchor_target``).
- ``get_all_proposal(cls_logits, bbox_deltas, im_info, training)`` -> rois (B * post_nms, 5)
  [batch_idx, x1, y1, x2, y2], gradient-free.
- ``get_all_proposal_with_score(...)`` (same arguments) -> ``(rois, scores)``: the same rois
  and their foreground probabilities (B * post_nms, 1), gradient-free.
- ``get_sampled_proposal(rois, gt_boxes, with_gt_index=False, crowd_boxes=None)`` ->
  ``(rois, labels, bbox_targets, bbox_weights)``: (B * S, 5), (B * S,), (B * S, 4K or 4) x 2,
  S RoIs sampled per image (proposal_target; the gt boxes join the candidates when
  roi_sampler.add_gt_as_proposals); with_gt_index=True appends ``gt_index`` (B * S,): for each
  foreground row the row index j (0..G-1) in gt_boxes[b] of its matched gt, -1 for background
  and ignored rows (Mask R-CNN's mask targets). crowd_boxes (B, M, 4) [x1, y1, x2, y2], rows of
  -1 padding (the ``gt_crowd`` input), when roi_sampler.crowd_iof is set: a proposal that would
  be background is ignored when a crowd region covers more than crowd_iof of it. All
  gradient-free.
"""

__all__ = ["RpnHeadBase"]


class RpnHeadBase:
    """Base class of RPN heads; see the module docstring for the tensor layouts."""

    def get_output(self, features):
        raise NotImplementedError

    def get_loss(self, cls_logits, bbox_deltas, rpn_label, rpn_target, rpn_weight):
        raise NotImplementedError

    def get_all_proposal(self, cls_logits, bbox_deltas, im_info, training):
        raise NotImplementedError

    def get_all_proposal_with_score(self, cls_logits, bbox_deltas, im_info, training):
        raise NotImplementedError

    def get_sampled_proposal(self, rois, gt_boxes, with_gt_index=False, crowd_boxes=None):
        raise NotImplementedError
