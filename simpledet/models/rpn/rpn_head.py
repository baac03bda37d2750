"""The RPN head: a shared 3x3 conv + relu, then 1x1 convs for A sigmoid logits and 4A deltas.

Choices (documented in the report of issue 4):

- Classification is one sigmoid logit per anchor (detectron2), not SimpleDet's 2A softmax
  channels: half the channels, and the foreground probability is what pyramid_proposal reads.
- Weights are shared by every level: one set of variables, applied per level.
- Loss: binary cross-entropy over the sampled anchors (label != -1) and smooth L1 with
  beta = ``rpn.reg_beta`` (default 1/9, SimpleDet's sigma 3) on rpn_target where rpn_weight is
  1, times ``rpn.reg_loss_weight``; both divided by the number of sampled anchors of the batch
  on this device.
- Proposals: sigmoid probabilities and deltas through ``simpledet.ops.pyramid_proposal``
  (joint NMS over levels), then ``simpledet.ops.proposal_target`` with the gt boxes (and, with
  ``roi_sampler.crowd_iof``, the crowd regions: would-be background proposals on them are
  ignored); both gradient-free (BlockGrad).

Parameters (prefix ``rpn_``): ``rpn_conv_3x3_{weight,bias}``, ``rpn_cls_logit_{weight,bias}``,
``rpn_bbox_delta_{weight,bias}``; weights N(0, 0.01), biases 0.
"""
import mxnet as mx

from simpledet.models import losses
from simpledet.models.rpn.base import RpnHeadBase
from simpledet.ops import proposal_target, pyramid_proposal

__all__ = ["RpnHead"]

class RpnHead(RpnHeadBase):
    """RPN over one (C4) or several (FPN) levels.

    Args:
        rpn_cfg: its section (``cfg.rpn``: anchors, head width, proposal counts and NMS).
        level_names: names of the input maps, ascending stride (e.g. p2..p6, or c4); they
            name the per-level ops.
        feature_strides: the strides of those maps (``cfg.rpn_feature_strides``).
        sampler_cfg: the ``roi_sampler`` section, for get_sampled_proposal (None: the head
            only scores and proposes); ``add_gt_as_proposals`` decides whether the gt boxes
            join the proposals as sampling candidates, ``crowd_iof`` whether the sampler takes
            the crowd regions (0 or None: it does not).
        num_classes: K including background, for get_sampled_proposal.
        box_cfg: the ``bbox_head`` section, whose reg_mean / reg_std / class_agnostic encode the
            sampled RoIs' regression targets, for get_sampled_proposal.
        prefix: name prefix of the head's layers and parameters.
    """

    def __init__(self, rpn_cfg, level_names, feature_strides, *, sampler_cfg=None,
                 num_classes=None, box_cfg=None, prefix="rpn_"):
        if len(level_names) != len(feature_strides):
            raise ValueError(f"RpnHead: {len(level_names)} level names {tuple(level_names)} but "
                             f"{len(feature_strides)} strides {tuple(feature_strides)}")
        self.rpn_cfg = rpn_cfg
        self.sampler_cfg, self.num_classes, self.box_cfg = sampler_cfg, num_classes, box_cfg
        self.level_names = tuple(level_names)
        self.feature_strides = tuple(feature_strides)
        self.num_anchors = rpn_cfg.num_anchors
        self.prefix = prefix

    def _var(self, name, init=None):
        return mx.sym.var(f"{self.prefix}{name}", init=init)

    def get_output(self, features):
        """Per-level logits (B, A, H, W) and deltas (B, 4A, H, W); see rpn/base.py."""
        if len(features) != len(self.level_names):
            raise ValueError(f"RpnHead expects {len(self.level_names)} feature maps "
                             f"{self.level_names}, got {len(features)}")
        gauss = mx.init.Normal(0.01)
        shared = {layer: (self._var(f"{layer}_weight", gauss), self._var(f"{layer}_bias"))
                  for layer in ("conv_3x3", "cls_logit", "bbox_delta")}
        cls_logits, bbox_deltas = [], []
        with mx.name.Prefix(self.prefix):
            for level, feature in zip(self.level_names, features):
                weight, bias = shared["conv_3x3"]
                conv = mx.sym.Convolution(feature, weight=weight, bias=bias, kernel=(3, 3),
                                          pad=(1, 1), num_filter=self.rpn_cfg.conv_channels,
                                          name=f"conv_3x3_{level}")
                conv = mx.sym.Activation(conv, act_type="relu", name=f"relu_{level}")
                weight, bias = shared["cls_logit"]
                cls_logits.append(mx.sym.Convolution(
                    conv, weight=weight, bias=bias, kernel=(1, 1), num_filter=self.num_anchors,
                    name=f"cls_logit_{level}"))
                weight, bias = shared["bbox_delta"]
                bbox_deltas.append(mx.sym.Convolution(
                    conv, weight=weight, bias=bias, kernel=(1, 1),
                    num_filter=4 * self.num_anchors, name=f"bbox_delta_{level}"))
        return cls_logits, bbox_deltas

    def _flatten_levels(self, per_level, name):
        """[(B, C_l, H_l, W_l)] -> (B, sum_l C_l * H_l * W_l) in (level, c, y, x) order."""
        flat = [mx.sym.reshape(x, shape=(0, -1), name=f"{name}_flat_{level}")
                for x, level in zip(per_level, self.level_names)]
        if len(flat) == 1:
            return flat[0]
        return mx.sym.concat(*flat, dim=1, name=f"{name}_concat")

    def get_loss(self, cls_logits, bbox_deltas, rpn_label, rpn_target, rpn_weight):
        """{"rpn_cls_loss": (1,), "rpn_reg_loss": (1,)}, each divided by the sampled anchors."""
        with mx.name.Prefix(self.prefix):
            logits = self._flatten_levels(cls_logits, "cls_logit")
            deltas = self._flatten_levels(bbox_deltas, "bbox_delta")
            count = losses.sampled_count(rpn_label, "loss_count")
            cls_sum = losses.sigmoid_bce_sum(logits, rpn_label, "cls_bce")
            reg_sum = losses.smooth_l1_sum(deltas, rpn_target, rpn_weight,
                                           self.rpn_cfg.reg_beta, "reg")
            reg_loss = losses.normalize(reg_sum, count, "reg_normalized")
            if self.rpn_cfg.reg_loss_weight != 1.0:
                reg_loss = reg_loss * float(self.rpn_cfg.reg_loss_weight)
            return {"rpn_cls_loss": losses.normalize(cls_sum, count, "cls_normalized"),
                    "rpn_reg_loss": reg_loss}

    def get_all_proposal(self, cls_logits, bbox_deltas, im_info, training):
        """Proposals (B * post_nms, 5) with the train or test pre/post-NMS counts."""
        rois, _ = self.get_all_proposal_with_score(cls_logits, bbox_deltas, im_info, training)
        return rois

    def get_all_proposal_with_score(self, cls_logits, bbox_deltas, im_info, training):
        """Proposals (B * post_nms, 5) and their foreground scores (B * post_nms, 1), with the
        train or test pre/post-NMS counts (the RPN-only detector outputs both)."""
        rpn = self.rpn_cfg
        pre_nms = rpn.train_pre_nms if training else rpn.test_pre_nms
        post_nms = rpn.train_post_nms if training else rpn.test_post_nms
        with mx.name.Prefix(self.prefix):
            probs = [mx.sym.BlockGrad(mx.sym.sigmoid(logit, name=f"cls_prob_{level}"),
                                      name=f"cls_prob_{level}_blockgrad")
                     for logit, level in zip(cls_logits, self.level_names)]
            deltas = [mx.sym.BlockGrad(delta, name=f"bbox_delta_{level}_blockgrad")
                      for delta, level in zip(bbox_deltas, self.level_names)]
            rois, scores = pyramid_proposal(
                probs, deltas, im_info, feature_strides=self.feature_strides,
                scales=rpn.anchor_scales, ratios=rpn.anchor_ratios, pre_nms_top_n=pre_nms,
                post_nms_top_n=post_nms, nms_threshold=rpn.nms_iou, min_size=rpn.min_box_size,
                name="proposal")
            return (mx.sym.BlockGrad(rois, name="proposal_blockgrad"),
                    mx.sym.BlockGrad(scores, name="proposal_score_blockgrad"))

    def get_sampled_proposal(self, rois, gt_boxes, with_gt_index=False, crowd_boxes=None):
        """RoIs sampled for the box head with their targets; see rpn/base.py.

        Args:
            rois: (B * R, 5) proposals [batch_idx, x1, y1, x2, y2] (get_all_proposal).
            gt_boxes: (B, G, 5) [x1, y1, x2, y2, class], padding rows of class <= 0.
            with_gt_index: also return gt_index (Mask R-CNN's mask targets).
            crowd_boxes: (B, M, 4) crowd regions [x1, y1, x2, y2], padding rows of -1 (the
                ``gt_crowd`` input, simpledet.data.targets.CrowdRegionAssigner): required when
                roi_sampler.crowd_iof is set (a would-be background proposal covered more than
                crowd_iof by a region is ignored), refused when it is 0 or None.

        Returns:
            ``(rois, labels, bbox_targets, bbox_weights)``: (B * S, 5), (B * S,),
            (B * S, 4K or 4) x 2 with S = roi_sampler.batch_per_image, plus ``gt_index``
            (B * S,) last when with_gt_index: a foreground row's matched row in gt_boxes[b],
            -1 on other rows (simpledet.ops.proposal_target). All gradient-free.

        Raises:
            ValueError: crowd_boxes missing although roi_sampler.crowd_iof is set, or given
                although it is not.
        """
        if not isinstance(with_gt_index, bool):
            raise TypeError(f"with_gt_index must be a bool, got {with_gt_index!r}")
        sampler, box = self.sampler_cfg, self.box_cfg
        if sampler is None or box is None or self.num_classes is None:
            raise ValueError("RpnHead.get_sampled_proposal needs sampler_cfg, num_classes and "
                             "box_cfg")
        crowd_iof = sampler.crowd_iof or None
        if crowd_iof is not None and crowd_boxes is None:
            raise ValueError(f"roi_sampler.crowd_iof is {sampler.crowd_iof}: pass crowd_boxes "
                             f"(the gt_crowd input), or set roi_sampler.crowd_iof=None")
        if crowd_iof is None and crowd_boxes is not None:
            raise ValueError(f"crowd_boxes given but roi_sampler.crowd_iof is "
                             f"{sampler.crowd_iof} (off): the sampler would not read them")
        crowd = {} if crowd_iof is None else {"crowd_boxes": crowd_boxes,
                                              "crowd_thresh": crowd_iof}
        with mx.name.Prefix(self.prefix):
            outputs = proposal_target(
                rois, gt_boxes, num_classes=self.num_classes,
                image_rois=sampler.batch_per_image, fg_fraction=sampler.fg_fraction,
                fg_thresh=sampler.fg_iou, bg_thresh_hi=sampler.bg_iou_hi,
                bg_thresh_lo=sampler.bg_iou_lo, bbox_means=box.reg_mean,
                bbox_stds=box.reg_std, class_agnostic=box.class_agnostic,
                add_gt=sampler.add_gt_as_proposals, output_gt_index=with_gt_index,
                name="proposal_target", **crowd)
            names = ("rois", "label", "bbox_target", "bbox_weight", "gt_index")
            return tuple(mx.sym.BlockGrad(out, name=f"sampled_{n}")
                         for out, n in zip(outputs, names))
