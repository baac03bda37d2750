"""Feature Pyramid Network neck: c2..c5 -> p2..p6 (Lin et al. 2017; SimpleDet / detectron2).

For each level: a lateral 1x1 conv to ``channels``; top-down, the coarser merged map is
nearest-upsampled x2, cropped to the finer lateral's size (sizes are rounded up, so 2 * ceil(n/2)
may exceed ceil(n)) and added; a 3x3 output conv gives p_l. p6 is p5 subsampled by a 1x1 max
pool of stride 2 (ceil(n / 2) rows), for the RPN only.

Parameters (prefix ``fpn_``): ``fpn_p{l}_lateral_{weight,bias}`` and
``fpn_p{l}_conv_{weight,bias}`` for l = 2..5.
"""
from typing import ClassVar

import mxnet as mx

from simpledet.models.neck.base import Neck

__all__ = ["FpnNeck"]

_LEVELS = (2, 3, 4, 5)
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
    """

    rpn_feature_names = ("p2", "p3", "p4", "p5", "p6")
    roi_feature_names = ("p2", "p3", "p4", "p5")
    strides: ClassVar[dict] = {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}

    def __init__(self, channels=256, prefix="fpn_", crop=True):
        self.channels = int(channels)
        self.prefix = prefix
        self.crop = bool(crop)

    def _conv(self, data, name, kernel):
        weight = mx.sym.var(f"{self.prefix}{name}_weight", init=_FPN_INIT)
        bias = mx.sym.var(f"{self.prefix}{name}_bias", init=mx.init.Zero())
        pad = (kernel - 1) // 2
        return mx.sym.Convolution(data, weight=weight, bias=bias, num_filter=self.channels,
                                  kernel=(kernel, kernel), pad=(pad, pad), name=name)

    def get_features(self, features):
        """c2..c5 -> {"p2": (B, channels, H/4, W/4), ..., "p6": (B, channels, H/64, W/64)}."""
        missing = [f"c{lvl}" for lvl in _LEVELS if f"c{lvl}" not in features]
        if missing:
            raise ValueError(f"FPN needs backbone features c2..c5, missing {missing}")
        outputs = {}
        with mx.name.Prefix(self.prefix):
            merged = None
            for level in reversed(_LEVELS):
                lateral = self._conv(features[f"c{level}"], f"p{level}_lateral", 1)
                if merged is not None:
                    up = mx.sym.UpSampling(merged, scale=2, sample_type="nearest", num_args=1,
                                           name=f"p{level + 1}_upsample")
                    if self.crop:
                        up = mx.sym.slice_like(up, lateral, axes=(2, 3),
                                               name=f"p{level}_clip")
                    lateral = mx.sym.elemwise_add(lateral, up, name=f"p{level}_sum")
                merged = lateral
                outputs[f"p{level}"] = self._conv(merged, f"p{level}_conv", 3)
            outputs["p6"] = mx.sym.Pooling(outputs["p5"], kernel=(1, 1), stride=(2, 2),
                                           pool_type="max", name="p6")
        return {name: outputs[name] for name in self.rpn_feature_names}
