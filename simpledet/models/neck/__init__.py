"""Necks: backbone features -> dense-head / RoI feature maps (FPN p2..p6, RetinaNet's FPN
p3..p7, or c4 as is)."""
from simpledet.models.neck.base import IdentityNeck, Neck
from simpledet.models.neck.fpn import FpnNeck, RetinaFpnNeck

__all__ = ["FpnNeck", "IdentityNeck", "Neck", "RetinaFpnNeck", "build_neck"]


def build_neck(neck_cfg):
    """The neck of a ``neck`` section: FpnNeck for type 'fpn', IdentityNeck for 'none'."""
    if neck_cfg.type == "fpn":
        # The loader pads every input to a multiple of 32 (engine.build.SIZE_DIVISOR), so the
        # upsampled maps match the finer levels exactly and need no crop.
        return FpnNeck(neck_cfg.channels, crop=False)
    return IdentityNeck()
