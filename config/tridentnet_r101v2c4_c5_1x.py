"""TridentNet, ResNet-101 v2 (MXNet model-zoo weights) C4 layout, C5 head, 1x (SimpleDet's
tridentnet_r101v2c4_c5_1x)."""
from _base.trident_c4 import trident_c4

cfg = trident_c4()
cfg.backbone.depth = 101
