"""Mask heads: RoI features -> per-class mask logits, their loss and their predictions."""
from simpledet.models.mask_head.base import MaskHead
from simpledet.models.mask_head.conv_head import ConvMaskHead

__all__ = ["ConvMaskHead", "MaskHead"]
