"""Necks: backbone features -> RPN / RoI feature maps (FPN p2..p6, or c4 as is)."""
from simpledet.models.neck.base import IdentityNeck, Neck
from simpledet.models.neck.fpn import FpnNeck

__all__ = ["FpnNeck", "IdentityNeck", "Neck", "build_neck"]


def build_neck(cfg):
    """The neck of a FasterRcnnConfig: FpnNeck for neck.type 'fpn', IdentityNeck for 'none'."""
    if cfg.neck.type == "fpn":
        # The loader pads every input to a multiple of 32 (engine.build.SIZE_DIVISOR), so the
        # upsampled maps match the finer levels exactly and need no crop.
        return FpnNeck(cfg.neck.channels, crop=False)
    return IdentityNeck()
