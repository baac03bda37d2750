"""Cascade R-CNN, ResNet-50 v2 (MXNet model-zoo weights ``resnet-50``) with res5 dilated at
stride 16 and reduced to 1024 channels, light 2MLP stage heads, 1x schedule: SimpleDet's
cascade_r50v2_c5_red_1x (its model zoo: backbone "R50v2-C5", head "2MLP", 38.8 box AP on
COCO minival; an older zoo table listed 37.5).

The recipe is config/_base/cascade_c5_red.py. What differs from SimpleDet's file: the input is
800 x 1333 in training and test (SimpleDet: long side 1200 in training, 2000 in test), the
schedule is 90k iterations at batch 16 with steps at 60k and 80k (SimpleDet: 6 epochs of the
flip-doubled COCO trainval35k, about 88k), and the reduce conv is named
``c5_reduce_conv_{weight,bias}`` (SimpleDet: ``conv_neck``).
"""
from _base.cascade_c5_red import cascade_c5_red

cfg = cascade_c5_red()
cfg.backbone.variant = "v2"
cfg.backbone.depth = 50
