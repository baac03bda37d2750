"""Mask R-CNN with an FPN neck: SimpleDet's mask_*_fpn_1x. The detection part is the FPN
Faster R-CNN recipe (``fpn_recipe`` of _base/faster_fpn.py); the mask branch keeps the schema
defaults of simpledet/config/mask_rcnn.py (RoIAlign 14x14 on P2-P5, 4 convs of 256, deconv to
28x28, per-class sigmoid masks).

Leaves call ``mask_fpn()`` and change a few fields.
"""
from _base.faster_fpn import fpn_recipe

from simpledet.config.mask_rcnn import MaskRcnnConfig


def mask_fpn() -> MaskRcnnConfig:
    """A fresh FPN Mask R-CNN config (ResNet-50 v1 backbone until a leaf changes it)."""
    return fpn_recipe(MaskRcnnConfig())
