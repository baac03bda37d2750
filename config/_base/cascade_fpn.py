"""Cascade R-CNN with an FPN neck: SimpleDet's cascade_*_fpn_1x. The detection part is the FPN
Faster R-CNN recipe (``fpn_recipe`` of _base/faster_fpn.py) with class-agnostic box regression;
the stages keep the schema defaults of simpledet/config/cascade_rcnn.py (IoU 0.5 / 0.6 / 0.7,
stds (0.1, 0.1, 0.2, 0.2) / (0.05, 0.05, 0.1, 0.1) / (0.033, 0.033, 0.067, 0.067), loss
weights 1 / 0.5 / 0.25, each later stage sampling 512 RoIs from the previous stage's boxes).

Leaves call ``cascade_fpn()`` and change a few fields.
"""
from _base.faster_fpn import fpn_recipe

from simpledet.config.cascade_rcnn import CascadeRcnnConfig


def cascade_fpn() -> CascadeRcnnConfig:
    """A fresh FPN Cascade R-CNN config (ResNet-50 v1 backbone until a leaf changes it)."""
    cfg = fpn_recipe(CascadeRcnnConfig())
    cfg.bbox_head.class_agnostic = True  # every stage refines one box per RoI
    return cfg
