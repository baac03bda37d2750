"""Feature Pyramid Network necks: c2..c5 -> p2..p6 for the two-stage detectors (Lin et al. 2017;
SimpleDet / detectron2), and RetinaNet's c3..c5 -> p3..p7 (:class:`RetinaFpnNeck`).

For each level: a lateral 1x1 conv to ``channels``; top-down, the coarser merged map is
nearest-upsampled x2, cropped to the finer lateral's size (sizes are rounded up, so 2 * ceil(n/2)
may exceed ceil(n)) and added; a 3x3 output conv gives p_l. p6 is p5 subsampled by a 1x1 max
pool of stride 2 (ceil(n / 2) rows), for the RPN only.

Parameters (prefix ``fpn_``): ``fpn_p{l}_lateral_{weight,bias}`` and
``fpn_p{l}_conv_{weight,bias}`` for l = 2..5. With a normalizer (``neck.normalizer``, e.g. 'gn':
detectron2's FPN ``norm``) each lateral and output conv is followed by the shared normalizer
(simpledet.models.layers.normalizer) and has no bias: ``fpn_p{l}_lateral_weight`` +
``fpn_p{l}_lateral_norm_{gamma,beta}``, ``fpn_p{l}_conv_weight`` + ``fpn_p{l}_conv_norm_*``.
"""
from typing import ClassVar

import mxnet as mx

from simpledet.models.layers.normalizer import Normalizer
from simpledet.models.neck.base import Neck

__all__ = ["FpnNeck", "RetinaFpnNeck"]

# Xavier uniform over the average fan, magnitude 3: SimpleDet's FPN initialization.
_FPN_INIT = mx.init.Xavier(rnd_type="uniform", factor_type="avg", magnitude=3)


class FpnNeck(Neck):
    """FPN neck with ``channels`` outputs on p2..p6 (strides 4..64).

    Args:
        channels: output channels of every level (``cfg.neck.channels``).
        prefix: name prefix of the neck's layers and parameters.
        crop: crop each upsampled map to the finer level's size. The detectors' inputs are
            padded to multiples of 32, where the sizes always match, so they turn it off:
            the crop is a full copy forward and backward (~3 % of a small model's step).
        normalizer: a :class:`Normalizer` after each lateral and output conv (those convs then
            have no bias); None or kind 'none': plain convs with bias.
    """

    levels = (2, 3, 4, 5)  # the backbone maps c{l} with a lateral and an output conv
    rpn_feature_names = ("p2", "p3", "p4", "p5", "p6")
    roi_feature_names = ("p2", "p3", "p4", "p5")
    strides: ClassVar[dict] = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}

    def __init__(self, channels=256, prefix="fpn_", crop=True, normalizer=None):
        self.channels = int(channels)
        self.prefix = prefix
        self.crop = bool(crop)
        self.normalizer = normalizer or Normalizer("none", key="neck.normalizer")

    def _conv(self, data, name, kernel, stride=1, norm=False):
        """A conv of ``channels``; ``norm``: followed by the normalizer (then no bias)."""
        weight = mx.sym.var(f"{self.prefix}{name}_weight", init=_FPN_INIT)
        pad = (kernel - 1) // 2
        geometry = dict(num_filter=self.channels, kernel=(kernel, kernel),
                        stride=(stride, stride), pad=(pad, pad), name=name)
        if not norm or self.normalizer.is_identity:
            bias = mx.sym.var(f"{self.prefix}{name}_bias", init=mx.init.Zero())
            return mx.sym.Convolution(data, weight=weight, bias=bias, **geometry)
        out = mx.sym.Convolution(data, weight=weight, no_bias=True, **geometry)
        with mx.name.NameManager():  # the full name, prefix included, names ops and parameters
            return self.normalizer(out, f"{self.prefix}{name}_norm", self.channels)

    def _top_down(self, features):
        """The lateral + top-down + 3x3 output maps {"p{l}": Symbol} of ``self.levels``
        (call under the neck's name prefix)."""
        missing = [f"c{lvl}" for lvl in self.levels if f"c{lvl}" not in features]
        if missing:
            raise ValueError(f"{type(self).__name__} needs backbone features "
                             f"{', '.join(f'c{lvl}' for lvl in self.levels)}, missing {missing}")
        outputs = {}
        merged = None
        for level in reversed(self.levels):
            lateral = self._conv(features[f"c{level}"], f"p{level}_lateral", 1, norm=True)
            if merged is not None:
                up = mx.sym.UpSampling(merged, scale=2, sample_type="nearest", num_args=1,
                                       name=f"p{level + 1}_upsample")
                if self.crop:
                    up = mx.sym.slice_like(up, lateral, axes=(2, 3), name=f"p{level}_clip")
                lateral = mx.sym.elemwise_add(lateral, up, name=f"p{level}_sum")
            merged = lateral
            outputs[f"p{level}"] = self._conv(merged, f"p{level}_conv", 3, norm=True)
        return outputs

    def get_features(self, features):
        """c2..c5 -> {"p2": (B, channels, H/4, W/4), ..., "p6": (B, channels, H/64, W/64)}."""
        with mx.name.Prefix(self.prefix):
            outputs = self._top_down(features)
            outputs["p6"] = mx.sym.Pooling(outputs["p5"], kernel=(1, 1), stride=(2, 2),
                                           pool_type="max", name="p6")
        return {name: outputs[name] for name in self.rpn_feature_names}


class RetinaFpnNeck(FpnNeck):
    """RetinaNet's FPN: p3..p7 (strides 8..128) from c3..c5 (Lin et al. 2017b; detectron2's
    ``LastLevelP6P7``, SimpleDet's RetinaNet neck).

    p3..p5 are FPN's lateral + top-down + 3x3 output maps of c3..c5 (no c2 lateral); p6 is a
    3x3 stride-2 conv of c5 (``p6_input='c5'``, the paper's, SimpleDet's and detectron2's
    choice) or of p5 ('p5', as some later detectors); p7 a 3x3 stride-2 conv of ReLU(p6). Each
    stride-2 conv maps n rows to ceil(n / 2), as the backbone does.

    Parameters (prefix ``fpn_``): ``fpn_p{l}_lateral_{weight,bias}`` and
    ``fpn_p{l}_conv_{weight,bias}`` for l = 3..5, ``fpn_p6_conv_*`` and ``fpn_p7_conv_*``.

    Args:
        channels: output channels of every level (``cfg.neck.channels``).
        p6_input: 'c5' or 'p5', the map p6 is computed from.
        prefix, crop: as FpnNeck.
    """

    levels = (3, 4, 5)
    rpn_feature_names = ("p3", "p4", "p5", "p6", "p7")
    roi_feature_names = ()
    strides: ClassVar[dict] = {"p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}

    def __init__(self, channels=256, p6_input="c5", prefix="fpn_", crop=False):
        super().__init__(channels, prefix=prefix, crop=crop)
        if p6_input not in ("c5", "p5"):
            raise ValueError(f"p6_input must be 'c5' or 'p5', got {p6_input!r}")
        self.p6_input = p6_input

    @classmethod
    def from_config(cls, neck_cfg):
        """From a ``neck`` section (simpledet.config.retinanet.RetinaNeckConfig). The loader
        pads inputs to multiples of 32, so the upsampled maps need no crop."""
        return cls(neck_cfg.channels, neck_cfg.p6_input, crop=False)

    def get_features(self, features):
        """c3..c5 -> {"p3": (B, channels, H/8, W/8), ..., "p7": (B, channels, H/128,
        W/128)} (sizes rounded up)."""
        with mx.name.Prefix(self.prefix):
            outputs = self._top_down(features)
            source = features["c5"] if self.p6_input == "c5" else outputs["p5"]
            outputs["p6"] = self._conv(source, "p6_conv", 3, stride=2)
            relu = mx.sym.Activation(outputs["p6"], act_type="relu", name="p6_relu")
            outputs["p7"] = self._conv(relu, "p7_conv", 3, stride=2)
        return {name: outputs[name] for name in self.rpn_feature_names}
