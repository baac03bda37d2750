"""Mask R-CNN's FPN mask head: ``num_convs`` x (3x3 conv + ReLU) -> 2x2 deconv, stride 2 +
ReLU -> the 1x1 per-class predictor of base.py (SimpleDet's MaskFPNConvHead, detectron2's
MaskRCNNConvUpsampleHead).

Parameters: ``mask_conv{i}_{weight,bias}`` (i = 1..num_convs), ``mask_deconv_{weight,bias}``:
He (MSRA) normal init over fan-out, as SimpleDet and detectron2 (c2_msra_fill); biases 0. With
``normalizer`` 'gn' (detectron2's GN configs) each conv has no bias and is followed by the
shared GroupNorm (simpledet.models.layers.normalizer): ``mask_conv{i}_norm_{gamma,beta}``; the
deconv is unchanged.
"""
import mxnet as mx

from simpledet.models.layers.normalizer import Normalizer
from simpledet.models.mask_head.base import MaskHead

__all__ = ["ConvMaskHead"]

_MSRA = mx.init.Xavier(rnd_type="gaussian", factor_type="out", magnitude=2)


class ConvMaskHead(MaskHead):
    """Four (``num_convs``) convs and a deconv of ``conv_channels`` (arguments: MaskHead)."""

    def _layer(self, op, data, name, norm=False, **kwargs):
        """op -> (normalizer, when ``norm`` and not 'none') -> ReLU."""
        channels = self.head_cfg.conv_channels
        normalizer = Normalizer(self.head_cfg.normalizer, key="mask_head.normalizer")
        weight = mx.sym.var(f"{self.prefix}{name}_weight", init=_MSRA)
        if norm and not normalizer.is_identity:
            out = op(data, weight=weight, num_filter=channels, no_bias=True, name=name, **kwargs)
            shape = (channels,)
            out = normalizer(out, f"{name}_norm", channels,
                             gamma=mx.sym.var(f"{self.prefix}{name}_norm_gamma", shape=shape,
                                              init=mx.init.One()),
                             beta=mx.sym.var(f"{self.prefix}{name}_norm_beta", shape=shape,
                                             init=mx.init.Zero()))
        else:
            bias = mx.sym.var(f"{self.prefix}{name}_bias", init=mx.init.Zero())
            # Deconvolution has no bias unless asked (no_bias defaults to True there).
            out = op(data, weight=weight, bias=bias, num_filter=channels, no_bias=False,
                     name=name, **kwargs)
        return mx.sym.Activation(out, act_type="relu", name=f"{name}_relu")

    def _head_feature(self, roi_feat):
        with mx.name.Prefix(self.prefix):
            feat = roi_feat
            for i in range(1, self.head_cfg.num_convs + 1):
                feat = self._layer(mx.sym.Convolution, feat, f"conv{i}", norm=True,
                                   kernel=(3, 3), pad=(1, 1))
            return self._layer(mx.sym.Deconvolution, feat, "deconv", kernel=(2, 2),
                               stride=(2, 2))
