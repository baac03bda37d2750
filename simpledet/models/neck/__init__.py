"""Necks: backbone features -> dense-head / RoI feature maps (FPN p2..p6, RetinaNet's FPN
p3..p7, c4 as is, or c4 and a channel-reduced dilated c5)."""
from simpledet.models.layers.normalizer import Normalizer
from simpledet.models.neck.base import IdentityNeck, Neck
from simpledet.models.neck.c5_reduce import C5ReduceNeck
from simpledet.models.neck.fpn import FpnNeck, RetinaFpnNeck

__all__ = ["C5ReduceNeck", "FpnNeck", "IdentityNeck", "Neck", "RetinaFpnNeck", "build_neck"]


def build_neck(neck_cfg, num_devices=1):
    """The neck of a ``neck`` section: FpnNeck for type 'fpn' (with ``neck.normalizer``;
    SyncBatchNorm over ``num_devices``), C5ReduceNeck for 'c5_reduce', IdentityNeck for
    'none'."""
    if neck_cfg.type == "fpn":
        # The loader pads every input to a multiple of 32 (engine.build.SIZE_DIVISOR), so the
        # upsampled maps match the finer levels exactly and need no crop.
        normalizer = Normalizer(neck_cfg.normalizer, num_devices, key="neck.normalizer")
        return FpnNeck(neck_cfg.channels, crop=False, normalizer=normalizer)
    if neck_cfg.type == "c5_reduce":
        return C5ReduceNeck.from_config(neck_cfg)
    return IdentityNeck()
