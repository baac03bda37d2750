"""Faster R-CNN: backbone -> neck -> RPN -> proposal sampling -> RoIAlign -> box head.

The stages up to the RPN (backbone, neck, RPN head, anchor levels, the RPN anchor targets) are
the RPN-only detector's (simpledet.detectors.rpn.RpnDetector), which this class extends.

Separate train and test symbols (no is-training branch inside one graph); components are built
in float32 and pass Symbols to each other. With ``cfg.precision`` 'fp16' / 'bf16' each
component's op nodes are recorded as it is built and the finished graph is converted so that
the components in ``cfg.mixed_precision.components`` compute in low precision, everything else
(losses, proposals, sampling, RoIAlign, decoding) in float32, parameters float32
(see simpledet.models.precision); with 'fp32' the graph is left as built.

It implements the contract of simpledet.detectors.base (layouts there and in
simpledet.data.layout). Train symbol inputs: data, im_info, gt_boxes, the RPN anchor targets
rpn_label (B, N), rpn_target, rpn_weight (B, 4N) for the N anchors of ``rpn_levels`` (see
simpledet.models.rpn.base), which the loader fills with the RpnAnchorAssigner of
``target_assigners``, then, with ``roi_sampler.crowd_iof`` (the default), gt_crowd
(B, input.max_num_crowd, 4): the crowd regions on which the RoI sampler ignores would-be
background proposals (its CrowdRegionAssigner). The class attribute ``train_data_names`` lists
the inputs without gt_crowd; an instance's lists those its config's graph takes.
Train symbol outputs: one MakeLoss per loss, named ``rpn_cls_loss``, ``rpn_reg_loss``,
    ``bbox_cls_loss``, ``bbox_reg_loss``; each forward output is the (1,) loss value. Each loss
    is normalized over this device's samples, so the optimizer should average the devices'
    gradients (rescale_grad = 1 / number of contexts).
Test symbol: inputs data, im_info; one output dets (B, max_det, 6) [x1, y1, x2, y2, score,
    class] in network-input pixels (simpledet.data.transforms.unscale_boxes with the im_info
    scale maps them to the original image), rows of -1 when unused.
"""
import mxnet as mx

from simpledet.data.targets import CrowdRegionAssigner, RpnAnchorAssigner
from simpledet.detectors.base import decode_detections
from simpledet.detectors.rpn import RpnDetector
from simpledet.models import FpnRoiExtractor, build_bbox_head
from simpledet.models.precision import PrecisionPlan

__all__ = ["FasterRcnn"]


class FasterRcnn(RpnDetector):
    """Builds Faster R-CNN symbols from a FasterRcnnConfig (see Detector for the attributes)."""

    train_data_names = ("data", "im_info", "gt_boxes", "rpn_label", "rpn_target", "rpn_weight")
    test_data_names = ("data", "im_info")
    label_names = ()
    loss_names = ("rpn_cls_loss", "rpn_reg_loss", "bbox_cls_loss", "bbox_reg_loss")
    precision_components = ("backbone", "neck", "rpn_head", "bbox_head")
    eval_types = ("bbox",)

    def __init__(self, cfg):
        super().__init__(cfg)  # backbone, neck, RPN head
        self._check_strides(self.neck.roi_feature_names, cfg.roi_feature_strides,
                            "roi_feature_strides")
        self.roi_extractor = FpnRoiExtractor(cfg.roi_extractor, cfg.roi_feature_strides)
        self.bbox_head = build_bbox_head(cfg.bbox_head, cfg.num_classes, cfg.test,
                                         self.backbone)
        if self.uses_crowd:  # gt_crowd follows the RPN targets, as in target_assigners
            names = type(self).train_data_names
            at = names.index(RpnAnchorAssigner.names[-1]) + 1
            self.train_data_names = names[:at] + CrowdRegionAssigner.names + names[at:]

    @property
    def uses_crowd(self):
        """Whether the RoI sampler ignores would-be background proposals on crowd regions
        (``roi_sampler.crowd_iof`` neither 0 nor None): the train graph then takes gt_crowd."""
        return bool(self.cfg.roi_sampler.crowd_iof)

    def _rpn_head_options(self):
        """The RoI sampling settings the RPN head's get_sampled_proposal needs."""
        return dict(sampler_cfg=self.cfg.roi_sampler, num_classes=self.cfg.num_classes,
                    box_cfg=self.cfg.bbox_head)

    # --- graph pieces -----------------------------------------------------------------------

    def _bbox_output(self, roi_feat, plan):
        """The box head's logits and deltas; ``plan`` records its op nodes (res5 for C4)."""
        cls_logit, bbox_delta = self.bbox_head.get_output(roi_feat)
        plan.mark("bbox_head", [roi_feat], [cls_logit, bbox_delta])
        return cls_logit, bbox_delta

    def _two_stage_losses(self, inputs, plan, with_gt_index=False):
        """The RPN and box-head losses of the train graph.

        Args:
            inputs: {train input name: Symbol}.
            plan: the PrecisionPlan recording the components.
            with_gt_index: also return each sampled RoI's matched gt row (families with
                per-gt targets beyond the box: Mask R-CNN).

        Returns:
            ({loss name: (1,) Symbol}, {"roi_features": list of Symbols, "rois" (B*S, 5),
            "label" (B*S,), the box head's "cls_logit" (B*S, K) and "bbox_delta" (B*S, 4K or
            4), and with_gt_index "gt_index" (B*S,)}).
        """
        rpn_features, roi_features = self._features(inputs["data"], plan)
        cls_logits, bbox_deltas = self._rpn_output(rpn_features, plan)
        loss_values = self.rpn_head.get_loss(cls_logits, bbox_deltas, inputs["rpn_label"],
                                             inputs["rpn_target"], inputs["rpn_weight"])
        proposals = self.rpn_head.get_all_proposal(cls_logits, bbox_deltas, inputs["im_info"],
                                                   training=True)
        sampled = self.rpn_head.get_sampled_proposal(
            proposals, inputs["gt_boxes"], with_gt_index=with_gt_index,
            crowd_boxes=inputs["gt_crowd"] if self.uses_crowd else None)
        return self._box_head_losses(loss_values, roi_features, sampled, plan)

    def _box_head_losses(self, loss_values, roi_features, sampled, plan):
        """Adds the box head's losses on the sampled RoIs to ``loss_values``; returns
        ``(loss_values, state)`` as :meth:`_two_stage_losses`. ``sampled``: the
        (rois, label, bbox_target, bbox_weight[, gt_index]) of get_sampled_proposal."""
        rois, label, bbox_target, bbox_weight = sampled[:4]
        roi_feat = self.roi_extractor.get_roi_feature(roi_features, rois)
        cls_logit, bbox_delta = self._bbox_output(roi_feat, plan)
        loss_values.update(self.bbox_head.get_loss(cls_logit, bbox_delta, label, bbox_target,
                                                   bbox_weight))
        state = {"roi_features": roi_features, "rois": rois, "label": label,
                 "cls_logit": cls_logit, "bbox_delta": bbox_delta}
        if len(sampled) > 4:
            state["gt_index"] = sampled[4]
        return loss_values, state

    def _detections(self, inputs, plan):
        """(dets (B, max_det, 6), roi feature list) of the test graph."""
        rpn_features, roi_features = self._features(inputs["data"], plan)
        cls_logits, bbox_deltas = self._rpn_output(rpn_features, plan)
        rois = self.rpn_head.get_all_proposal(cls_logits, bbox_deltas, inputs["im_info"],
                                              training=False)
        roi_feat = self.roi_extractor.get_roi_feature(roi_features, rois)
        cls_logit, bbox_delta = self._bbox_output(roi_feat, plan)
        dets = self.bbox_head.get_prediction(cls_logit, bbox_delta, rois, inputs["im_info"])
        return dets, roi_features

    def get_train_symbol(self):
        """mx.sym.Group of the four MakeLoss outputs (see the module docstring)."""
        inputs = {name: mx.sym.var(name) for name in self.train_data_names}
        plan = PrecisionPlan.from_config(self.cfg)
        loss_values, _ = self._two_stage_losses(inputs, plan)
        return self._loss_group(loss_values, plan)

    def get_test_symbol(self):
        """The inference symbol: data, im_info -> dets (B, max_det, 6)."""
        inputs = {name: mx.sym.var(name) for name in self.test_data_names}
        plan = PrecisionPlan.from_config(self.cfg)
        dets, _ = self._detections(inputs, plan)
        return plan.apply(dets, self.test_data_names)

    # --- what the engine needs (the rest is RpnDetector's) ------------------------------------

    def target_assigners(self, buckets=None):
        """[RpnAnchorAssigner of cfg.rpn on the levels of ``rpn_levels`` (see
        RpnDetector.target_assigners), then, when ``uses_crowd``, the CrowdRegionAssigner of
        cfg.input (it draws nothing from the image's random stream)]."""
        crowd = [CrowdRegionAssigner.from_config(self.cfg.input)] if self.uses_crowd else []
        return super().target_assigners(buckets) + crowd

    def decode_test_outputs(self, outputs, im_info, image_sizes):
        """Per-image detections (original pixels) of dets (B, max_det, 6), the first output:
        the contract's default decoding (simpledet.detectors.base.decode_detections), not the
        RPN's."""
        return decode_detections(outputs, im_info, image_sizes)
