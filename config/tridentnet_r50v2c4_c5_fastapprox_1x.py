"""TridentFast, ResNet-50 v2 C4 layout, C5 head, 1x (SimpleDet's
tridentnet_r50v2c4_c5_fastapprox_1x): trained as TridentNet, tested with the middle branch
(dilation 2) alone, at Faster R-CNN's test cost."""
from _base.trident_c4 import trident_c4

cfg = trident_c4()
cfg.trident.test_branch = 1
