"""RetinaNet, ResNet-101 v1 (MSRA weights) + P3-P7 FPN, 1x schedule."""
from _base.retina_fpn import retina_fpn

cfg = retina_fpn()
cfg.backbone.variant = "v1"
cfg.backbone.depth = 101
