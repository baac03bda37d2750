"""The 4conv1fc box head (detectron2's FastRCNNConvFCHead with NUM_CONV 4, NUM_FC 1, the box
head of its GroupNorm configs): 4 x (3x3 conv -> normalizer -> relu) -> flatten -> fc -> relu.

Parameters: ``bbox_conv{i}_weight`` (i = 1..4; He normal over fan-out, detectron2's
c2_msra_fill) with ``bbox_conv{i}_norm_{gamma,beta}`` when normalized ('gn', through
simpledet.models.layers.normalizer) or ``bbox_conv{i}_bias`` when not; ``bbox_fc1_{weight,bias}``
(Xavier uniform over fan-in, magnitude 3), plus the predictors of base.py. A Cascade R-CNN
stage's head has its suffix after the layer name (``bbox_conv1_2nd_weight``); a head run twice
(``tag``) shares every parameter, GroupNorm's affine included.
"""
import mxnet as mx

from simpledet.models.bbox_head.base import BboxHead
from simpledet.models.layers.normalizer import Normalizer

__all__ = ["ConvFcHead"]

_FC_INIT = mx.init.Xavier(rnd_type="uniform", factor_type="in", magnitude=3)
_MSRA = mx.init.Xavier(rnd_type="gaussian", factor_type="out", magnitude=2)


class ConvFcHead(BboxHead):
    """``num_convs`` 3x3 convs of ``head_cfg.conv_channels`` with ``head_cfg.normalizer``, then
    one fc of ``head_cfg.fc_dim`` (arguments: see BboxHead)."""

    num_convs = 4

    def __init__(self, head_cfg, num_classes, test_cfg, prefix="bbox_", suffix=""):
        super().__init__(head_cfg, num_classes, test_cfg, prefix, suffix)
        self.normalizer = Normalizer(head_cfg.normalizer, key="bbox_head.normalizer")

    def _conv_norm_relu(self, data, layer, tag):
        channels = self.head_cfg.conv_channels
        weight = self._param(layer, "weight", _MSRA)
        geometry = dict(kernel=(3, 3), pad=(1, 1), num_filter=channels,
                        name=self._op(layer, tag))
        if self.normalizer.is_identity:
            bias = self._param(layer, "bias", mx.init.Zero())
            out = mx.sym.Convolution(data, weight=weight, bias=bias, **geometry)
        else:
            out = mx.sym.Convolution(data, weight=weight, no_bias=True, **geometry)
            norm = f"{layer}_norm"
            out = self.normalizer(out, self._op(norm, tag), channels,
                                  gamma=self._param(norm, "gamma", mx.init.One(), (channels,)),
                                  beta=self._param(norm, "beta", mx.init.Zero(), (channels,)))
        return mx.sym.Activation(out, act_type="relu", name=self._op(f"{layer}_relu", tag))

    def _head_feature(self, roi_feat, tag):
        with mx.name.Prefix(self.prefix):
            feat = roi_feat
            for i in range(1, self.num_convs + 1):
                feat = self._conv_norm_relu(feat, f"conv{i}", tag)
            flat = mx.sym.flatten(feat, name=self._op("flatten", tag))
            fc1 = self._fc(flat, "fc1", self.head_cfg.fc_dim, _FC_INIT, tag)
            return mx.sym.Activation(fc1, act_type="relu", name=self._op("fc1_relu", tag))
