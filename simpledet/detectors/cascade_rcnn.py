"""Cascade R-CNN (FPN or C5-reduce layout): Faster R-CNN whose box head is followed by R-CNN
stages of rising IoU, each refining the boxes of the one before (Cai and Vasconcelos, 2018;
SimpleDet's cascade_*_fpn_1x and cascade_r50v2_c5_red_1x). T = ``cfg.cascade.num_stages``
stages, named 1st, 2nd, 3rd, ... Every stage pools from the neck's RoI maps (FPN P2-P5, or the
one reduced c5 of 'c5_reduce'), so the layouts share this code.

Train: stage 1 is Faster R-CNN's box head on the RPN's sampled RoIs (``roi_sampler``, IoU
``cascade.fg_iou[0]``). Stage t's deltas (BlockGrad) decode its RoIs into refined boxes
(simpledet.ops.box_decode: stds ``cascade.reg_std[t]``, clipped to each RoI's image, batch index
kept); stage t+1 samples its RoIs from them and the gt (simpledet.ops.proposal_target at IoU
``cascade.fg_iou[t+1]``, targets normalized by ``reg_std[t+1]``, ``cascade.resample``), pools
them with its own RoIAlign op and runs its own 2MLP head; its two losses are multiplied by
``cascade.loss_weight[t+1]``. Regression is class-agnostic in every stage.

Test: RPN proposals -> stage 1 -> decode -> stage 2 -> ... -> stage T's RoIs. Every head scores
the stage-T RoIs (heads 1..T-1 run again, with their own parameters, on stage T's pooled
features: SimpleDet's and the paper's ensemble); their softmax probabilities are averaged, the
boxes are stage T's regression of the stage-T RoIs, and the shared detection_postprocess
(class agnostic, stds ``reg_std[T-1]``) gives dets (B, max_det, 6) as Faster R-CNN's.

Inputs: Faster R-CNN's (simpledet.detectors.faster_rcnn).
Losses: ``rpn_cls_loss``, ``rpn_reg_loss``, then per stage ``bbox_cls_loss_1st``,
``bbox_reg_loss_1st``, ``bbox_cls_loss_2nd``, ... (SimpleDet's names), each weighted.
Parameters: Faster R-CNN's backbone, neck and RPN, and per stage SimpleDet's names
``bbox_fc1_1st_weight``, ``bbox_fc2_2nd_bias``, ``bbox_cls_logit_3rd_weight``,
``bbox_reg_delta_3rd_bias``, ... (simpledet.models.bbox_head.base).
"""
import mxnet as mx

from simpledet.detectors.faster_rcnn import FasterRcnn
from simpledet.models import FpnRoiExtractor, build_bbox_head
from simpledet.models.precision import PrecisionPlan
from simpledet.ops import box_decode, proposal_target

__all__ = ["CascadeRcnn", "stage_name"]


def stage_name(index):
    """'1st', '2nd', '3rd', '4th', ... of a 0-based stage index."""
    number = index + 1
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(number, f"{number}th")


class CascadeRcnn(FasterRcnn):
    """Builds Cascade R-CNN symbols from a CascadeRcnnConfig (see the module docstring).

    Attributes:
        stage_names: ('1st', '2nd', ...), one per stage.
        bbox_heads: each stage's box head (TwoMlpHead, or ConvFcHead for '4conv1fc';
            ``bbox_head`` is the first, as in Faster R-CNN).
        roi_extractors: each stage's RoIAlign (the first is Faster R-CNN's ``roi_extractor``).
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        cascade = cfg.cascade
        self.stage_names = tuple(stage_name(t) for t in range(cascade.num_stages))
        self.bbox_heads = []
        for std, name in zip(cascade.reg_std, self.stage_names):
            head_cfg = cfg.bbox_head.copy()
            head_cfg.reg_std = std
            self.bbox_heads.append(build_bbox_head(head_cfg.freeze(), cfg.num_classes, cfg.test,
                                                   suffix=f"_{name}"))
        self.bbox_head = self.bbox_heads[0]
        self.roi_extractors = [self.roi_extractor] + [
            FpnRoiExtractor(cfg.roi_extractor, cfg.roi_feature_strides, prefix=f"roi_{name}_")
            for name in self.stage_names[1:]]
        self.loss_names = ("rpn_cls_loss", "rpn_reg_loss") + tuple(
            f"bbox_{kind}_loss_{name}" for name in self.stage_names for kind in ("cls", "reg"))

    # --- stage pieces -----------------------------------------------------------------------

    def _stage_output(self, t, roi_feat, plan, tag=""):
        """Stage t's head on ``roi_feat``: (cls_logit (R, K), bbox_delta (R, 4))."""
        cls_logit, bbox_delta = self.bbox_heads[t].get_output(roi_feat, tag)
        plan.mark("bbox_head", [roi_feat], [cls_logit, bbox_delta])
        return cls_logit, bbox_delta

    def _refine(self, t, rois, bbox_delta, im_info):
        """Stage t's RoIs (R, 5) moved by its deltas (R, 4): the next stage's candidates."""
        name = self.stage_names[t]
        delta = mx.sym.BlockGrad(bbox_delta, name=f"bbox_reg_delta_{name}_blockgrad")
        return box_decode(rois, delta, im_info, bbox_means=self.cfg.bbox_head.reg_mean,
                          bbox_stds=self.cfg.cascade.reg_std[t], name=f"bbox_decode_{name}")

    def _sample(self, t, candidates, gt_boxes, crowd_boxes=None):
        """Stage t's (t >= 1) training RoIs from the previous stage's refined boxes; with
        ``crowd_boxes`` (``uses_crowd``) would-be background boxes on crowd regions are
        ignored, as in stage 1.

        Returns:
            (rois (B*S, 5), label (B*S,), bbox_target (B*S, 4), bbox_weight (B*S, 4)), all
            gradient-free; S = roi_sampler.batch_per_image with cascade.resample, else the
            candidates per image plus G with add_gt_as_proposals.
        """
        cfg, name = self.cfg, self.stage_names[t]
        sampler, cascade = cfg.roi_sampler, cfg.cascade
        iou = cascade.fg_iou[t]
        crowd = {} if crowd_boxes is None else {"crowd_boxes": crowd_boxes,
                                                "crowd_thresh": sampler.crowd_iof}
        outputs = proposal_target(
            candidates, gt_boxes, num_classes=cfg.num_classes,
            image_rois=sampler.batch_per_image, fg_fraction=sampler.fg_fraction,
            fg_thresh=iou, bg_thresh_hi=iou, bg_thresh_lo=sampler.bg_iou_lo,
            bbox_means=cfg.bbox_head.reg_mean, bbox_stds=cascade.reg_std[t],
            class_agnostic=True, add_gt=sampler.add_gt_as_proposals, sample=cascade.resample,
            name=f"bbox_proposal_target_{name}", **crowd)
        return tuple(mx.sym.BlockGrad(out, name=f"bbox_sampled_{what}_{name}") for out, what
                     in zip(outputs, ("rois", "label", "bbox_target", "bbox_weight")))

    def _weighted(self, t, loss_values):
        """Stage t's losses times cascade.loss_weight[t]."""
        weight = float(self.cfg.cascade.loss_weight[t])
        return {key: mx.sym._internal._mul_scalar(value, scalar=weight, name=f"{key}_weighted")
                for key, value in loss_values.items()}

    # --- graphs -----------------------------------------------------------------------------

    def get_train_symbol(self):
        """mx.sym.Group of the RPN's and every stage's MakeLoss outputs (module docstring)."""
        inputs = {name: mx.sym.var(name) for name in self.train_data_names}
        plan = PrecisionPlan.from_config(self.cfg)
        loss_values, state = self._two_stage_losses(inputs, plan)
        first = {f"bbox_{kind}_loss_{self.stage_names[0]}" for kind in ("cls", "reg")}
        loss_values.update(self._weighted(0, {k: loss_values.pop(k) for k in first}))
        rois, bbox_delta = state["rois"], state["bbox_delta"]
        for t in range(1, len(self.stage_names)):
            candidates = self._refine(t - 1, rois, bbox_delta, inputs["im_info"])
            rois, label, bbox_target, bbox_weight = self._sample(
                t, candidates, inputs["gt_boxes"], inputs.get("gt_crowd"))
            roi_feat = self.roi_extractors[t].get_roi_feature(state["roi_features"], rois)
            cls_logit, bbox_delta = self._stage_output(t, roi_feat, plan)
            loss_values.update(self._weighted(t, self.bbox_heads[t].get_loss(
                cls_logit, bbox_delta, label, bbox_target, bbox_weight)))
        return self._loss_group(loss_values, plan)

    def _cascade_detections(self, inputs, plan):
        """(dets (B, max_det, 6), {"rois": per-stage RoIs, "cls_prob": the averaged
        probabilities}) of the test graph."""
        im_info = inputs["im_info"]
        rpn_features, roi_features = self._features(inputs["data"], plan)
        cls_logits, bbox_deltas = self._rpn_output(rpn_features, plan)
        rois = self.rpn_head.get_all_proposal(cls_logits, bbox_deltas, im_info, training=False)
        stage_rois, bbox_delta = [], None
        for t in range(len(self.stage_names)):
            if t:
                rois = self._refine(t - 1, rois, bbox_delta, im_info)
            stage_rois.append(rois)
            roi_feat = self.roi_extractors[t].get_roi_feature(roi_features, rois)
            cls_logit, bbox_delta = self._stage_output(t, roi_feat, plan)
        last = self.stage_names[-1]
        probs = []
        for t, head in enumerate(self.bbox_heads[:-1]):
            logit, _ = self._stage_output(t, roi_feat, plan, tag=f"_{last}")
            probs.append(head.get_probability(logit, tag=f"_{last}"))
        probs.append(self.bbox_heads[-1].get_probability(cls_logit))
        with mx.name.Prefix("bbox_"):
            total = mx.sym.add_n(*probs, name="cls_prob_sum")
            cls_prob = mx.sym._internal._div_scalar(total, scalar=float(len(probs)),
                                                    name="cls_prob_mean")
        dets = self.bbox_heads[-1].postprocess(cls_prob, bbox_delta, rois, im_info)
        return dets, {"rois": stage_rois, "cls_prob": cls_prob}

    def get_test_symbol(self):
        """The inference symbol: data, im_info -> dets (B, max_det, 6)."""
        inputs = {name: mx.sym.var(name) for name in self.test_data_names}
        plan = PrecisionPlan.from_config(self.cfg)
        dets, _ = self._cascade_detections(inputs, plan)
        return plan.apply(dets, self.test_data_names)
