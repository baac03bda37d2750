"""Faster R-CNN, ResNet-101 v1 (MSRA weights) + FPN, 1x schedule."""
from _base.faster_fpn import faster_fpn

cfg = faster_fpn()
cfg.backbone.variant = "v1"
cfg.backbone.depth = 101
