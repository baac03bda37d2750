"""Faster R-CNN, ResNet-50 v1b (GluonCV weights, ImageNet mean/std) + FPN, 1x schedule."""
from _base.faster_fpn import faster_fpn

cfg = faster_fpn()
cfg.backbone.variant = "v1b"
cfg.backbone.depth = 50
