"""TridentNet, ResNet-50 v2 (MXNet model-zoo weights) C4 layout, C5 head, 1x (SimpleDet's
tridentnet_r50v2c4_c5_1x): three weight-sharing branches, scale-aware, all merged at test."""
from _base.trident_c4 import trident_c4

cfg = trident_c4()
