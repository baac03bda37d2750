"""The box head contract (SimpleDet's ``bbox_head.get_output() / get_loss() /
get_prediction()``), with the predictor, the loss and the post-processing kept apart.

Layouts (R RoIs, K = num_classes including background 0):

- ``get_output(roi_feat)`` -> ``(cls_logit (R, K), bbox_delta (R, 4K))``, or (R, 4) when class
  agnostic; deltas (dx, dy, dw, dh) normalized by ``reg_mean`` / ``reg_std``.
- ``get_loss(cls_logit, bbox_delta, label, bbox_target, bbox_weight)`` -> {"bbox_cls_loss",
  "bbox_reg_loss"}: (1,) Symbols; label (R,) in 0..K-1 or -1 (ignored).
- ``get_prediction(cls_logit, bbox_delta, rois, im_info)`` -> dets (B, max_det, 6)
  [x1, y1, x2, y2, score, class] in input pixels, rows of -1 when unused.

Subclasses implement ``_head_feature(roi_feat) -> (R, D)``. Parameters are prefixed ``bbox_``:
``bbox_cls_logit_{weight,bias}`` (N(0, 0.01)), ``bbox_reg_delta_{weight,bias}`` (N(0, 0.001),
as SimpleDet and detectron2), biases 0.
"""
import mxnet as mx

from simpledet.models import losses
from simpledet.ops import detection_postprocess

__all__ = ["BboxHead"]

_BBOX_REG_BETA = 1.0  # SimpleDet's box-head smooth L1 (sigma 1)


class BboxHead:
    """Box classification and regression on pooled RoI features.

    Args:
        head_cfg: its section (``cfg.bbox_head``: fc_dim, class_agnostic, reg_mean/reg_std,
            c5_stride).
        num_classes: K, classes including background.
        test_cfg: the post-processing settings (``cfg.test``: score_thresh, nms_iou, max_det).
        prefix: name prefix of the head's layers and parameters.
    """

    def __init__(self, head_cfg, num_classes, test_cfg, prefix="bbox_"):
        self.head_cfg = head_cfg
        self.test_cfg = test_cfg
        self.num_classes = int(num_classes)
        self.class_agnostic = head_cfg.class_agnostic
        self.prefix = prefix

    def _head_feature(self, roi_feat):
        """(R, C, h, w) RoI features -> (R, D) Symbol."""
        raise NotImplementedError

    def _fc(self, data, name, num_hidden, init):
        weight = mx.sym.var(f"{self.prefix}{name}_weight", init=init)
        bias = mx.sym.var(f"{self.prefix}{name}_bias", init=mx.init.Zero())
        return mx.sym.FullyConnected(data, weight=weight, bias=bias, num_hidden=num_hidden,
                                     name=name)

    def get_output(self, roi_feat):
        """Class logits and box deltas of every RoI; see the module docstring."""
        feat = self._head_feature(roi_feat)
        reg_outputs = 4 if self.class_agnostic else 4 * self.num_classes
        with mx.name.Prefix(self.prefix):
            cls_logit = self._fc(feat, "cls_logit", self.num_classes, mx.init.Normal(0.01))
            bbox_delta = self._fc(feat, "reg_delta", reg_outputs, mx.init.Normal(0.001))
        return cls_logit, bbox_delta

    def get_loss(self, cls_logit, bbox_delta, label, bbox_target, bbox_weight):
        """Softmax cross-entropy and smooth L1 (beta 1), divided by the sampled RoIs."""
        with mx.name.Prefix(self.prefix):
            count = losses.sampled_count(label, "loss_count")
            cls_sum = losses.softmax_ce_sum(cls_logit, label, "cls_ce")
            reg_sum = losses.smooth_l1_sum(bbox_delta, bbox_target, bbox_weight,
                                           _BBOX_REG_BETA, "reg")
            return {"bbox_cls_loss": losses.normalize(cls_sum, count, "cls_normalized"),
                    "bbox_reg_loss": losses.normalize(reg_sum, count, "reg_normalized")}

    def get_prediction(self, cls_logit, bbox_delta, rois, im_info):
        """Softmax, decode, per-class NMS: dets (B, max_det, 6); see the module docstring."""
        head, test = self.head_cfg, self.test_cfg
        with mx.name.Prefix(self.prefix):
            cls_prob = mx.sym.softmax(cls_logit, axis=-1, name="cls_prob")
        return detection_postprocess(
            rois, cls_prob, bbox_delta, im_info, bbox_means=head.reg_mean,
            bbox_stds=head.reg_std, score_thresh=test.score_thresh,
            nms_threshold=test.nms_iou, max_det=test.max_det,
            class_agnostic=self.class_agnostic, name="dets")
