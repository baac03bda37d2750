"""Cascade R-CNN, ResNet-50 v1 (MSRA weights) + FPN, 1x schedule (SimpleDet's
cascade_r50v1_fpn_1x)."""
from _base.cascade_fpn import cascade_fpn

cfg = cascade_fpn()
cfg.backbone.variant = "v1"
cfg.backbone.depth = 50
