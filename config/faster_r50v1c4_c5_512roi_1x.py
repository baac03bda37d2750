"""Faster R-CNN, ResNet-50 v1 C4 layout with the C5 box head, 512 RoIs per image, 1x."""
from _base.faster_c4 import faster_c4

cfg = faster_c4()
cfg.backbone.variant = "v1"
cfg.backbone.depth = 50
cfg.roi_sampler.batch_per_image = 512
