"""Mask R-CNN, ResNet-50 v1 (MSRA weights) + FPN, 1x schedule (SimpleDet's mask_r50v1_fpn_1x)."""
from _base.mask_fpn import mask_fpn

cfg = mask_fpn()
cfg.backbone.variant = "v1"
cfg.backbone.depth = 50
