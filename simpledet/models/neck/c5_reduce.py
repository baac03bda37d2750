"""The C5-reduce neck (SimpleDet's ``*_c5_red`` configs, "red" for reduce): a 1x1 conv + ReLU
that reduces a dilated res5's c5 (2048 channels at stride 16) to ``channels`` for RoIAlign, so
that light 2MLP box heads follow; the RPN reads c4 (stride 16) as it is.

This is the wiring of SimpleDet's ``cascade_r50v2_c5_red_1x`` (its ``CascadeNeck`` reduces
the R-CNN feature only; the RPN runs on c4 of the ``c4c5`` backbone). Compared with
detectron2's R50-DC5 (RPN and a 2fc head on the full 2048-channel res5) the reduction makes the
first fc 2048 / ``channels`` times smaller.

Parameters (prefix ``c5_reduce_``): ``c5_reduce_conv_weight`` (Gaussian, std 0.01, as
SimpleDet's) and ``c5_reduce_conv_bias`` (zero).
"""
from typing import ClassVar

import mxnet as mx

from simpledet.models.neck.base import Neck

__all__ = ["C5ReduceNeck"]


class C5ReduceNeck(Neck):
    """RPN on c4, RoIAlign on ReLU(conv1x1(c5)) with ``channels`` outputs; both at stride 16
    (the backbone's res5 runs at stride 1, dilated: ``res5_dilation`` 2).

    Args:
        channels: output channels of the reduced map (``cfg.neck.channels``).
        prefix: name prefix of the conv, its ReLU and its parameters.
    """

    rpn_feature_names = ("c4",)
    roi_feature_names = ("c5_reduced",)
    strides: ClassVar[dict] = {"c4": 16, "c5_reduced": 16}

    def __init__(self, channels=256, prefix="c5_reduce_"):
        if channels < 1:
            raise ValueError(f"neck.channels must be >= 1, got {channels}")
        self.channels = int(channels)
        self.prefix = prefix

    @classmethod
    def from_config(cls, neck_cfg):
        """From a ``neck`` section of type 'c5_reduce' (simpledet.config.faster_rcnn)."""
        return cls(neck_cfg.channels)

    def get_features(self, features):
        """{"c4", "c5"} -> {"c4": c4 as is, "c5_reduced": (B, channels, H/16, W/16)}."""
        missing = [name for name in ("c4", "c5") if name not in features]
        if missing:
            raise ValueError(f"{type(self).__name__} needs backbone features c4 and c5 (res5 "
                             f"dilated, at stride 16), missing {missing}")
        with mx.name.Prefix(self.prefix):
            weight = mx.sym.var(f"{self.prefix}conv_weight", init=mx.init.Normal(0.01))
            bias = mx.sym.var(f"{self.prefix}conv_bias", init=mx.init.Zero())
            reduced = mx.sym.Convolution(features["c5"], weight=weight, bias=bias,
                                         num_filter=self.channels, kernel=(1, 1), name="conv")
            reduced = mx.sym.Activation(reduced, act_type="relu", name="relu")
        return {"c4": features["c4"], "c5_reduced": reduced}
