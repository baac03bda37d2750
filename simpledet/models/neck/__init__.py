"""Necks: backbone features -> dense-head / RoI feature maps (FPN p2..p6, RetinaNet's FPN
p3..p7, or c4 as is)."""
from simpledet.models.layers.normalizer import Normalizer
from simpledet.models.neck.base import IdentityNeck, Neck
from simpledet.models.neck.fpn import FpnNeck, RetinaFpnNeck

__all__ = ["FpnNeck", "IdentityNeck", "Neck", "RetinaFpnNeck", "build_neck"]


def build_neck(neck_cfg, num_devices=1):
    """The neck of a ``neck`` section: FpnNeck for type 'fpn' (with ``neck.normalizer``;
    SyncBatchNorm over ``num_devices``), IdentityNeck for 'none'."""
    if neck_cfg.type == "fpn":
        # The loader pads every input to a multiple of 32 (engine.build.SIZE_DIVISOR), so the
        # upsampled maps match the finer levels exactly and need no crop.
        normalizer = Normalizer(neck_cfg.normalizer, num_devices, key="neck.normalizer")
        return FpnNeck(neck_cfg.channels, crop=False, normalizer=normalizer)
    return IdentityNeck()
