"""The box head contract (SimpleDet's ``bbox_head.get_output() / get_loss() /
get_prediction()``), with the predictor, the loss and the post-processing kept apart.

Layouts (R RoIs, K = num_classes including background 0):

- ``get_output(roi_feat)`` -> ``(cls_logit (R, K), bbox_delta (R, 4K))``, or (R, 4) when class
  agnostic; deltas (dx, dy, dw, dh) normalized by ``reg_mean`` / ``reg_std``.
- ``get_loss(cls_logit, bbox_delta, label, bbox_target, bbox_weight)`` -> {"bbox_cls_loss",
  "bbox_reg_loss"}: (1,) Symbols; label (R,) in 0..K-1 or -1 (ignored).
- ``get_prediction(cls_logit, bbox_delta, rois, im_info)`` -> dets (B, max_det, 6)
  [x1, y1, x2, y2, score, class] in input pixels, rows of -1 when unused; it is
  ``postprocess(get_probability(cls_logit), ...)``, the two halves a family that combines
  several heads' probabilities (Cascade R-CNN) calls on its own.

Subclasses implement ``_head_feature(roi_feat, tag) -> (R, D)``. Parameters are prefixed
``bbox_``: ``bbox_cls_logit_{weight,bias}`` (N(0, 0.01)), ``bbox_reg_delta_{weight,bias}``
(N(0, 0.001), as SimpleDet and detectron2), biases 0. A head built with a ``suffix`` (Cascade
R-CNN's stages, SimpleDet's names: ``_1st``, ``_2nd``, ...) puts it after the layer name:
``bbox_fc1_1st_weight``, ``bbox_cls_logit_2nd_bias``, and its losses are
``bbox_cls_loss_1st``, ...; a head may run on several RoI sets with the same parameters
(``get_output(roi_feat, tag)``: ``tag`` only renames the op nodes of the extra run).
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
        suffix: put after each layer's name (parameters, ops, loss names); '' for one head.
    """

    def __init__(self, head_cfg, num_classes, test_cfg, prefix="bbox_", suffix=""):
        self.head_cfg = head_cfg
        self.test_cfg = test_cfg
        self.num_classes = int(num_classes)
        self.class_agnostic = head_cfg.class_agnostic
        self.prefix = prefix
        self.suffix = suffix
        self._vars = {}  # one Variable per parameter name, however often the head runs

    def _head_feature(self, roi_feat, tag):
        """(R, C, h, w) RoI features -> (R, D) Symbol; ``tag`` is appended to op names."""
        raise NotImplementedError

    def _param(self, layer, kind, init, shape=None):
        """The head's Variable ``{prefix}{layer}{suffix}_{kind}`` (kind 'weight', 'bias',
        'gamma', ...), created once; ``shape`` where inference cannot find it."""
        full = f"{self.prefix}{layer}{self.suffix}_{kind}"
        if full not in self._vars:
            self._vars[full] = mx.sym.var(full, init=init, shape=shape)
        return self._vars[full]

    def _op(self, name, tag=""):
        """An op node name (inside the ``prefix`` name scope): ``{name}{suffix}{tag}``."""
        return f"{name}{self.suffix}{tag}"

    def _fc(self, data, name, num_hidden, init, tag=""):
        weight = self._param(name, "weight", init)
        bias = self._param(name, "bias", mx.init.Zero())
        return mx.sym.FullyConnected(data, weight=weight, bias=bias, num_hidden=num_hidden,
                                     name=self._op(name, tag))

    def get_output(self, roi_feat, tag=""):
        """Class logits and box deltas of every RoI; see the module docstring.

        Args:
            roi_feat: (R, C, h, w) pooled RoI features.
            tag: appended to the op names of this run ('' the first time; another run of the
                same head, on other RoIs, needs its own tag).
        """
        feat = self._head_feature(roi_feat, tag)
        reg_outputs = 4 if self.class_agnostic else 4 * self.num_classes
        with mx.name.Prefix(self.prefix):
            cls_logit = self._fc(feat, "cls_logit", self.num_classes, mx.init.Normal(0.01), tag)
            bbox_delta = self._fc(feat, "reg_delta", reg_outputs, mx.init.Normal(0.001), tag)
        return cls_logit, bbox_delta

    def get_loss(self, cls_logit, bbox_delta, label, bbox_target, bbox_weight):
        """Softmax cross-entropy and smooth L1 (beta 1), divided by the sampled RoIs:
        {"bbox_cls_loss{suffix}", "bbox_reg_loss{suffix}"} (prefix 'bbox_')."""
        with mx.name.Prefix(self.prefix):
            count = losses.sampled_count(label, self._op("loss_count"))
            cls_sum = losses.softmax_ce_sum(cls_logit, label, self._op("cls_ce"))
            reg_sum = losses.smooth_l1_sum(bbox_delta, bbox_target, bbox_weight,
                                           _BBOX_REG_BETA, self._op("reg"))
            return {f"{self.prefix}cls_loss{self.suffix}":
                    losses.normalize(cls_sum, count, self._op("cls_normalized")),
                    f"{self.prefix}reg_loss{self.suffix}":
                    losses.normalize(reg_sum, count, self._op("reg_normalized"))}

    def get_probability(self, cls_logit, tag=""):
        """Softmax class probabilities (R, K) of the logits."""
        with mx.name.Prefix(self.prefix):
            return mx.sym.softmax(cls_logit, axis=-1, name=self._op("cls_prob", tag))

    def postprocess(self, cls_prob, bbox_delta, rois, im_info, name="dets"):
        """Decode with this head's reg_mean / reg_std, per-class NMS: dets (B, max_det, 6).

        Args:
            cls_prob: (B*R, K) class probabilities (get_probability, or an average of several).
            bbox_delta: (B*R, 4K), or (B*R, 4) when class agnostic: this head's deltas.
            rois: (B*R, 5) the RoIs the deltas refine; im_info (B, 3).
            name: the op's name.
        """
        head, test = self.head_cfg, self.test_cfg
        return detection_postprocess(
            rois, cls_prob, bbox_delta, im_info, bbox_means=head.reg_mean,
            bbox_stds=head.reg_std, score_thresh=test.score_thresh,
            nms_threshold=test.nms_iou, max_det=test.max_det,
            class_agnostic=self.class_agnostic, name=name)

    def get_prediction(self, cls_logit, bbox_delta, rois, im_info):
        """Softmax, decode, per-class NMS: dets (B, max_det, 6); see the module docstring."""
        return self.postprocess(self.get_probability(cls_logit), bbox_delta, rois, im_info)
