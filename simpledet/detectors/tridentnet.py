"""TridentNet (Li et al., "Scale-Aware Trident Networks for Object Detection", 2019;
SimpleDet's tridentnet_*c4_c5_1x): C4 Faster R-CNN whose res4 trident units run as K branches
with 3x3 dilations ``trident.dilations`` (1 / 2 / 3) sharing one set of parameters
(simpledet.models.backbone.TridentResNet), each branch trained on the objects of its scale.

Layout: the branches are stacked along the batch axis, image-major (row b*K + k is image b in
branch k), so the RPN, the proposals, the RoI sampling, RoIAlign and the C5 box head see B*K
"images" and each image yields K times the proposals and sampled RoIs of Faster R-CNN.

Scale-aware training (``trident.scale_aware``), branch k with range
``trident.valid_ranges[k]`` = (lo, hi) in input pixels (sqrt of the "+1" box area, hi < 0: no
upper bound; simpledet.data.targets.in_valid_range):

- RPN: the loader's TridentAnchorAssigner makes K anchor-target maps per image (anchors on gt
  outside the range ignored, per-branch sampling): rpn_label (B, K, N), rpn_target and
  rpn_weight (B, K, 4N), reshaped here to (B*K, ...). The loader does this part because the
  anchor targets are the loader's (the graph only reads them), and it sees every gt box.
- RoIs: the graph gives branch k the gt rows in range k only (the others become padding rows
  of class -1 before proposal_target: they are neither matched nor added as proposals), and
  after sampling ignores (label -1, zero weights) every sampled RoI whose own size is outside
  range k. Filtering after sampling costs part of the RoI budget but needs no new op
  (SimpleDet's Proposal_v2 drops them before the proposal NMS instead).

Test: all branches (``trident.test_branch`` None) run stacked; the box head scores the B*K*R
proposals, with ``trident.test_scale_aware`` the RoIs (proposals) outside their branch's range
get zero class probabilities (dropped by the score threshold; the paper filters the refined
boxes, SimpleDet too: here the proposal's size stands for it), and one per-class NMS per image
(detection_postprocess over the image's K*R RoIs) merges the branches. TridentFast
(``trident.test_branch`` = 1) builds the middle branch alone (dilation 2): the test graph is
then Faster R-CNN's, with the same parameters.

Inputs and losses: Faster R-CNN's names (simpledet.detectors.faster_rcnn), the RPN targets with
a branch axis as above. Parameters: exactly those of the C4 Faster R-CNN on the same backbone.
"""
import mxnet as mx

from simpledet.data.targets import CrowdRegionAssigner, TridentAnchorAssigner, levels_table
from simpledet.detectors.faster_rcnn import FasterRcnn
from simpledet.models import build_bbox_head
from simpledet.models.backbone import TridentResNet
from simpledet.models.precision import PrecisionPlan

__all__ = ["TridentNet", "branch_gt_boxes", "branch_range_mask"]


def _range_constant(values, name):
    """(1, K, 1) Symbol of K constants."""
    parts = [mx.sym.full(shape=(1, 1, 1), val=float(v), name=f"{name}{k}")
             for k, v in enumerate(values)]
    return parts[0] if len(parts) == 1 else mx.sym.concat(*parts, dim=1, name=name)


def branch_range_mask(boxes, valid_ranges, name):
    """Which boxes are in their branch's range.

    Args:
        boxes: (B, K, R, >=4) Symbol [x1, y1, x2, y2, ...], branch k's boxes at [:, k].
        valid_ranges: K (lo, hi) pairs, hi < 0 for no upper bound.
        name: op-name prefix.

    Returns:
        (B, K, R) float32 Symbol: 1 where lo_k^2 <= (x2 - x1 + 1) * (y2 - y1 + 1) <= hi_k^2.
    """
    x1 = mx.sym.slice_axis(boxes, axis=3, begin=0, end=1)
    y1 = mx.sym.slice_axis(boxes, axis=3, begin=1, end=2)
    x2 = mx.sym.slice_axis(boxes, axis=3, begin=2, end=3)
    y2 = mx.sym.slice_axis(boxes, axis=3, begin=3, end=4)
    area = mx.sym.reshape((x2 - x1 + 1.0) * (y2 - y1 + 1.0), shape=(0, 0, -1),
                          name=f"{name}_area")
    lo = _range_constant([lo * lo for lo, _ in valid_ranges], f"{name}_lo")
    mask = mx.sym.broadcast_greater_equal(area, lo, name=f"{name}_above_lo")
    his = [hi * hi if hi >= 0 else float("3.4e38") for _, hi in valid_ranges]
    hi = _range_constant(his, f"{name}_hi")
    return mx.sym.broadcast_mul(mask, mx.sym.broadcast_lesser_equal(area, hi,
                                                                    name=f"{name}_below_hi"),
                                name=f"{name}_mask")


def branch_gt_boxes(gt_boxes, valid_ranges, name="trident_gt"):
    """Each branch's gt: (B, G, 5) -> (B*K, G, 5), image-major, rows outside branch k's range
    turned into padding (class -1, coordinates kept)."""
    num = len(valid_ranges)
    tiled = mx.sym.tile(mx.sym.expand_dims(gt_boxes, axis=1), reps=(1, num, 1, 1),
                        name=f"{name}_tile")  # (B, K, G, 5)
    keep = mx.sym.expand_dims(branch_range_mask(tiled, valid_ranges, name), axis=3)
    coords = mx.sym.slice_axis(tiled, axis=3, begin=0, end=4)
    cls = mx.sym.slice_axis(tiled, axis=3, begin=4, end=5)
    cls = keep * cls + (keep - 1.0)  # in range: the class; else -1
    branch = mx.sym.concat(coords, cls, dim=3, name=f"{name}_boxes")
    return mx.sym.reshape(branch, shape=(-3, -2), name=f"{name}_stacked")


class TridentNet(FasterRcnn):
    """Builds TridentNet symbols from a TridentNetConfig (see the module docstring).

    Attributes:
        num_branches: K, the branches of training (len(trident.dilations)).
        test_backbone: the backbone of the test graph (all branches, or ``test_branch``).
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        trident = cfg.trident
        self.num_branches = len(trident.dilations)
        self.backbone = TridentResNet.from_config(cfg.backbone, trident,
                                                  num_devices=cfg.runtime.num_devices)
        test_branches = None if trident.test_branch is None else (trident.test_branch,)
        self.test_backbone = TridentResNet.from_config(
            cfg.backbone, trident, num_devices=cfg.runtime.num_devices, branches=test_branches)
        self.bbox_head = build_bbox_head(cfg.bbox_head, cfg.num_classes, cfg.test,
                                         self.backbone)

    @property
    def train_ranges(self):
        """The branches' valid ranges in training (all unbounded without scale_aware)."""
        if self.cfg.trident.scale_aware:
            return tuple(self.cfg.trident.valid_ranges)
        return ((0.0, -1.0),) * self.num_branches

    def _branch_rows(self, symbol, name):
        """(B, ...) -> (B*K, ...): each image's row repeated for its K branches."""
        return mx.sym.repeat(symbol, repeats=self.num_branches, axis=0, name=name)

    def _features(self, data, plan=None, backbone=None):
        """(rpn feature list, roi feature list) of ``backbone`` (the training one by
        default); c4 has B*K rows."""
        plan = plan or PrecisionPlan()
        features = (backbone or self.backbone).get_features(data)
        plan.mark("backbone", [data], list(features.values()))
        c4 = self.neck.get_features(features)["c4"]
        return [c4], [c4]

    def _two_stage_losses(self, inputs, plan, with_gt_index=False):
        """Faster R-CNN's losses on the B*K stacked branch-images (module docstring); the
        state dict as FasterRcnn's, rows (B*K*S) image-major then branch."""
        num, ranges = self.num_branches, self.train_ranges
        rpn_features, roi_features = self._features(inputs["data"], plan)
        cls_logits, bbox_deltas = self._rpn_output(rpn_features, plan)
        label, target, weight = (  # (B, K, n) -> (B*K, n)
            mx.sym.reshape(inputs[key], shape=(-3, -2), name=f"{key}_stacked")
            for key in ("rpn_label", "rpn_target", "rpn_weight"))
        loss_values = self.rpn_head.get_loss(cls_logits, bbox_deltas, label, target, weight)
        im_info = self._branch_rows(inputs["im_info"], "trident_im_info")
        proposals = self.rpn_head.get_all_proposal(cls_logits, bbox_deltas, im_info,
                                                   training=True)
        crowd = (self._branch_rows(inputs["gt_crowd"], "trident_gt_crowd") if self.uses_crowd
                 else None)
        sampled = self.rpn_head.get_sampled_proposal(
            proposals, branch_gt_boxes(inputs["gt_boxes"], ranges),
            with_gt_index=with_gt_index, crowd_boxes=crowd)
        rois, label, bbox_target, bbox_weight = sampled[:4]
        if self.cfg.trident.scale_aware:
            # Ignore the sampled RoIs outside their branch's range (rows: image, branch, roi).
            rois_4d = mx.sym.reshape(rois, shape=(-1, num, self.cfg.roi_sampler.batch_per_image,
                                                  5), name="trident_rois_4d")
            keep = branch_range_mask(mx.sym.slice_axis(rois_4d, axis=3, begin=1, end=5),
                                     ranges, "trident_roi")
            keep = mx.sym.reshape(keep, shape=(-1,), name="trident_roi_keep")
            label = mx.sym.BlockGrad(label * keep + (keep - 1.0),  # kept: the label; else -1
                                     name="trident_label")
            bbox_weight = mx.sym.BlockGrad(mx.sym.broadcast_mul(
                bbox_weight, mx.sym.expand_dims(keep, axis=1)), name="trident_bbox_weight")
        return self._box_head_losses(
            loss_values, roi_features, (rois, label, bbox_target, bbox_weight, *sampled[4:]),
            plan)

    def _detections(self, inputs, plan):
        """(dets (B, max_det, 6), roi feature list) of the test graph (module docstring)."""
        im_info = inputs["im_info"]
        backbone = self.test_backbone
        rpn_features, roi_features = self._features(inputs["data"], plan, backbone)
        if backbone.num_branches == 1:  # TridentFast: Faster R-CNN's test path
            cls_logits, bbox_deltas = self._rpn_output(rpn_features, plan)
            rois = self.rpn_head.get_all_proposal(cls_logits, bbox_deltas, im_info,
                                                  training=False)
            roi_feat = self.roi_extractor.get_roi_feature(roi_features, rois)
            cls_logit, bbox_delta = self._bbox_output(roi_feat, plan)
            dets = self.bbox_head.get_prediction(cls_logit, bbox_delta, rois, im_info)
            return dets, roi_features
        num = backbone.num_branches
        cls_logits, bbox_deltas = self._rpn_output(rpn_features, plan)
        rois = self.rpn_head.get_all_proposal(cls_logits, bbox_deltas,
                                              self._branch_rows(im_info, "trident_im_info"),
                                              training=False)  # (B*K*R, 5)
        roi_feat = self.roi_extractor.get_roi_feature(roi_features, rois)
        cls_logit, bbox_delta = self._bbox_output(roi_feat, plan)
        cls_prob = self.bbox_head.get_probability(cls_logit)
        if self.cfg.trident.test_scale_aware:
            rois_4d = mx.sym.reshape(rois, shape=(-1, num, self.cfg.rpn.test_post_nms, 5),
                                     name="trident_test_rois_4d")
            keep = branch_range_mask(mx.sym.slice_axis(rois_4d, axis=3, begin=1, end=5),
                                     self.cfg.trident.valid_ranges, "trident_test_roi")
            keep = mx.sym.reshape(keep, shape=(-1, 1), name="trident_test_roi_keep")
            cls_prob = mx.sym.broadcast_mul(cls_prob, keep, name="trident_cls_prob")
        # Merge: image b's K*R rois are rows [b*K*R, (b+1)*K*R); batch index b = row's // K.
        image = mx.sym.floor(mx.sym.slice_axis(rois, axis=1, begin=0, end=1) / float(num))
        merged = mx.sym.concat(image, mx.sym.slice_axis(rois, axis=1, begin=1, end=5), dim=1,
                               name="trident_merged_rois")
        dets = self.bbox_head.postprocess(cls_prob, bbox_delta, merged, im_info)
        return dets, roi_features

    def target_assigners(self, buckets=None):
        """[TridentAnchorAssigner of cfg.rpn with the training ranges (K maps per image),
        then CrowdRegionAssigner when ``uses_crowd``] (see FasterRcnn.target_assigners)."""
        levels_fn = self.rpn_levels if buckets is None else levels_table(self.rpn_levels,
                                                                          buckets)
        crowd = [CrowdRegionAssigner.from_config(self.cfg.input)] if self.uses_crowd else []
        return [TridentAnchorAssigner.from_config(
            self.cfg.rpn, levels_fn, self.train_ranges,
            self.cfg.trident.invalid_anchor_iou)] + crowd
