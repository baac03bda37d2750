"""RetinaNet's head (Lin et al. 2017b; SimpleDet's and detectron2's RetinaNet).

Features: two towers of ``num_convs`` 3x3 convs + ReLU (``conv_channels`` each), one for
classification and one for box regression, on every pyramid level with one set of weights
(the same variables are applied to p3..p7). Optionally (``norm``, detectron2's option) a
normalization between conv and ReLU: 'gn', a GroupNorm shared over the levels like the convs
(FCOS's choice), or 'bn', one BatchNorm per level and layer (detectron2's "domain-specific"
BN: the levels' statistics differ, the conv weights are still shared). Predictor: a 3x3
conv to A * C class logits (one sigmoid per foreground class, no background logit) and a 3x3
conv to 4A class-agnostic deltas.
Loss: sigmoid focal loss (``simpledet.ops.sigmoid_focal_loss``, normalized by the foreground
anchors of the batch on this device) and smooth L1 (or L1) on the foreground anchors' deltas,
divided by the same count. Post-processing: sigmoid, then ``simpledet.ops.retina_postprocess``
(per-level threshold and top-k, decode, class-aware NMS over all levels).

Layouts (A = len(scales) * len(ratios) anchors per location, C foreground classes, levels in
ascending stride; the ops' and the loader's, simpledet.data.targets.retina):

- ``cls_logits[l]`` (B, A * C, H_l, W_l): channel a * C + c is class c + 1 of anchor a
  (anchor-major, as ``retina_postprocess`` reads it);
- ``bbox_deltas[l]`` (B, 4A, H_l, W_l): channel a * 4 + k is delta k (dx, dy, dw, dh) of
  anchor a, encoded with means 0 and stds 1 (``simpledet.core.boxes.encode_boxes``'s defaults,
  the op's defaults);
- ``retina_label`` (B, N), N = sum_l A * H_l * W_l in (level, a, y, x) order: 0 background,
  1..C the class, -1 ignored; ``retina_target`` / ``retina_weight`` (B, 4N) in
  (level, a * 4 + k, y, x) order. The loss lays the logits out as (B, N, C) in that same anchor
  order and the deltas as (B, 4N).

Anchor a is ratio a // len(scales), scale a % len(scales) (``simpledet.core.anchors``), made by
the post-processing op from (stride, scales, ratios) as the loader makes them.

Parameters (prefix ``retina_``): ``retina_cls_conv{i}_{weight,bias}``,
``retina_bbox_conv{i}_{weight,bias}`` (i = 1..num_convs), ``retina_cls_logit_{weight,bias}``,
``retina_bbox_delta_{weight,bias}``; with GN ``retina_{cls,bbox}_gn{i}_{gamma,beta}`` (1, 0),
with BN ``retina_{cls,bbox}_bn{i}_{level}_{gamma,beta}`` and their moving statistics.
Conv weights N(0, 0.01), biases 0 except the class logits' bias, -log((1 - prior_prob) /
prior_prob), so every anchor starts at probability prior_prob and the many background anchors
do not swamp the first iterations.
"""
import math

import mxnet as mx

from simpledet.models import losses
from simpledet.models.layers.normalizer import group_norm
from simpledet.ops import retina_postprocess, sigmoid_focal_loss

__all__ = ["RetinaHead"]


class RetinaHead:
    """RetinaNet's head over the neck's levels (see the module docstring).

    Args:
        head_cfg: its section (``cfg.head``: num_convs, conv_channels, prior_prob, focal_alpha,
            focal_gamma, reg_beta, test_pre_nms).
        anchor_cfg: the ``anchors`` section (scales, ratios).
        test_cfg: the ``test`` section (score_thresh, nms_iou, max_det) for get_prediction.
        num_fg_classes: C, the foreground classes (``cfg.num_classes - 1``).
        level_names: the neck's maps the head runs on, ascending stride (p3..p7); they name
            the per-level ops.
        feature_strides: their strides (from the neck).
        prefix: name prefix of the head's layers and parameters.
    """

    def __init__(self, head_cfg, anchor_cfg, test_cfg, num_fg_classes, level_names,
                 feature_strides, prefix="retina_"):
        if len(level_names) != len(feature_strides):
            raise ValueError(f"RetinaHead: {len(level_names)} level names {tuple(level_names)} "
                             f"but {len(feature_strides)} strides {tuple(feature_strides)}")
        if num_fg_classes < 1:
            raise ValueError(f"RetinaHead needs at least one foreground class, got "
                             f"{num_fg_classes}")
        self.head_cfg, self.anchor_cfg, self.test_cfg = head_cfg, anchor_cfg, test_cfg
        self.num_fg_classes = int(num_fg_classes)
        self.level_names = tuple(level_names)
        self.feature_strides = tuple(feature_strides)
        self.num_anchors = anchor_cfg.num_anchors
        self.prefix = prefix

    # --- features and predictor ---------------------------------------------------------------

    def _var(self, name, init, shape=None):
        return mx.sym.var(f"{self.prefix}{name}", init=init, shape=shape)

    def _shared_layers(self):
        """{layer: (weight, bias)}: one set of variables, applied on every level."""
        head = self.head_cfg
        gauss = mx.init.Normal(0.01)
        prior_bias = -math.log((1.0 - head.prior_prob) / head.prior_prob)
        layers = {}
        for tower in ("cls", "bbox"):
            for i in range(1, head.num_convs + 1):
                layers[f"{tower}_conv{i}"] = (self._var(f"{tower}_conv{i}_weight", gauss),
                                              self._var(f"{tower}_conv{i}_bias",
                                                        mx.init.Zero()))
                if head.norm == "gn":
                    shape = (head.conv_channels,)
                    layers[f"{tower}_gn{i}"] = (
                        self._var(f"{tower}_gn{i}_gamma", mx.init.One(), shape),
                        self._var(f"{tower}_gn{i}_beta", mx.init.Zero(), shape))
        layers["cls_logit"] = (self._var("cls_logit_weight", gauss),
                               self._var("cls_logit_bias", mx.init.Constant(prior_bias)))
        layers["bbox_delta"] = (self._var("bbox_delta_weight", gauss),
                                self._var("bbox_delta_bias", mx.init.Zero()))
        return layers

    @staticmethod
    def _conv3x3(data, layer, channels, name):
        weight, bias = layer
        return mx.sym.Convolution(data, weight=weight, bias=bias, kernel=(3, 3), pad=(1, 1),
                                  num_filter=channels, name=name)

    def _tower(self, feature, tower, level, layers):
        out = feature
        for i in range(1, self.head_cfg.num_convs + 1):
            out = self._conv3x3(out, layers[f"{tower}_conv{i}"], self.head_cfg.conv_channels,
                                f"{tower}_conv{i}_{level}")
            if self.head_cfg.norm == "gn":
                gamma, beta = layers[f"{tower}_gn{i}"]
                out = group_norm(out, f"{tower}_gn{i}_{level}", self.head_cfg.conv_channels,
                                 gamma, beta, self.head_cfg.norm_groups)
            elif self.head_cfg.norm == "bn":  # one BatchNorm per level: its own statistics
                out = mx.sym.BatchNorm(out, fix_gamma=False, use_global_stats=False,
                                       momentum=0.9, eps=1e-5, name=f"{tower}_bn{i}_{level}")
            out = mx.sym.Activation(out, act_type="relu", name=f"{tower}_relu{i}_{level}")
        return out

    def get_output(self, features):
        """Per-level class logits (B, A * C, H, W) and deltas (B, 4A, H, W).

        Args:
            features: the neck's maps, one per level name, ascending stride.

        Returns:
            (cls_logits, bbox_deltas): two lists of Symbols, one entry per level.
        """
        if len(features) != len(self.level_names):
            raise ValueError(f"RetinaHead expects {len(self.level_names)} feature maps "
                             f"{self.level_names}, got {len(features)}")
        layers = self._shared_layers()
        num_a, num_c = self.num_anchors, self.num_fg_classes
        cls_logits, bbox_deltas = [], []
        with mx.name.Prefix(self.prefix):
            for level, feature in zip(self.level_names, features):
                cls_feat = self._tower(feature, "cls", level, layers)
                cls_logits.append(self._conv3x3(cls_feat, layers["cls_logit"], num_a * num_c,
                                                f"cls_logit_{level}"))
                box_feat = self._tower(feature, "bbox", level, layers)
                bbox_deltas.append(self._conv3x3(box_feat, layers["bbox_delta"], 4 * num_a,
                                                 f"bbox_delta_{level}"))
        return cls_logits, bbox_deltas

    # --- loss ---------------------------------------------------------------------------------

    def _anchor_logits(self, cls_logits):
        """[(B, A * C, H_l, W_l)] -> (B, N, C), anchors in (level, a, y, x) order."""
        num_a, num_c = self.num_anchors, self.num_fg_classes
        parts = []
        for logit, level in zip(cls_logits, self.level_names):
            split = mx.sym.reshape(logit, shape=(0, num_a, num_c, -1),
                                   name=f"cls_logit_split_{level}")  # (B, A, C, HW)
            moved = mx.sym.transpose(split, axes=(0, 1, 3, 2),
                                     name=f"cls_logit_transpose_{level}")  # (B, A, HW, C)
            parts.append(mx.sym.reshape(moved, shape=(0, -1, num_c),
                                        name=f"cls_logit_anchors_{level}"))
        return parts[0] if len(parts) == 1 else mx.sym.concat(*parts, dim=1,
                                                               name="cls_logit_concat")

    def _flat_deltas(self, bbox_deltas):
        """[(B, 4A, H_l, W_l)] -> (B, 4N) in (level, a * 4 + k, y, x) order."""
        flat = [mx.sym.reshape(d, shape=(0, -1), name=f"bbox_delta_flat_{level}")
                for d, level in zip(bbox_deltas, self.level_names)]
        return flat[0] if len(flat) == 1 else mx.sym.concat(*flat, dim=1,
                                                             name="bbox_delta_concat")

    def get_loss(self, cls_logits, bbox_deltas, label, target, weight):
        """{"retina_cls_loss": (1,), "retina_reg_loss": (1,)}.

        Args:
            cls_logits, bbox_deltas: get_output's lists.
            label: (B, N) retina_label; target, weight: (B, 4N) retina_target / retina_weight.

        Returns:
            The focal loss (the op divides by max(#anchors labelled 1..C, 1)) and the smooth L1
            (``reg_beta`` > 0) or L1 (0) of the foreground deltas divided by the same count.
        """
        head = self.head_cfg
        with mx.name.Prefix(self.prefix):
            logits = self._anchor_logits(cls_logits)
            deltas = self._flat_deltas(bbox_deltas)
            cls_loss = sigmoid_focal_loss(logits, label, alpha=head.focal_alpha,
                                          gamma=head.focal_gamma, name="focal_loss")
            count = losses.foreground_count(label, "fg_count")
            reg_sum = losses.smooth_l1_sum(deltas, target, weight, head.reg_beta, "reg")
            return {"retina_cls_loss": cls_loss,
                    "retina_reg_loss": losses.normalize(reg_sum, count, "reg_normalized")}

    # --- post-processing ----------------------------------------------------------------------

    def get_prediction(self, cls_logits, bbox_deltas, im_info):
        """Sigmoid probabilities and ``retina_postprocess``: dets (B, max_det, 6) [x1, y1, x2,
        y2, score, class] in network-input pixels, class 1..C, unused rows -1."""
        anchors, test = self.anchor_cfg, self.test_cfg
        with mx.name.Prefix(self.prefix):
            probs = [mx.sym.sigmoid(logit, name=f"cls_prob_{level}")
                     for logit, level in zip(cls_logits, self.level_names)]
        return retina_postprocess(
            probs, list(bbox_deltas), im_info, feature_strides=self.feature_strides,
            scales=anchors.scales, ratios=anchors.ratios, score_thresh=test.score_thresh,
            pre_nms_top_n=self.head_cfg.test_pre_nms, nms_threshold=test.nms_iou,
            max_det=test.max_det, name="dets")
