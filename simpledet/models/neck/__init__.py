"""Necks: backbone features -> RPN / RoI feature maps (FPN p2..p6, or c4 as is)."""
from simpledet.models.neck.base import IdentityNeck, Neck
from simpledet.models.neck.fpn import FpnNeck

__all__ = ["FpnNeck", "IdentityNeck", "Neck", "build_neck"]


def build_neck(cfg):
    """The neck of a FasterRcnnConfig: FpnNeck for neck.type 'fpn', IdentityNeck for 'none'."""
    if cfg.neck.type == "fpn":
        return FpnNeck(cfg.neck.channels)
    return IdentityNeck()
