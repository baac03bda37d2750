"""Quickstart: Mask R-CNN with a small FPN, trained from scratch on the bundled synthetic
shapes dataset (generated on first use; its objects carry polygons) on CPU.

    python detection_train.py --config config/shapes/mask_fpn.py
    python detection_test.py --config config/shapes/mask_fpn.py

The detection part is the Faster R-CNN FPN quickstart's (config/shapes/faster_fpn.py: a
half-width ResNet-18 v1b, 48-channel FPN and RPN, 64 RoIs per image); the mask head keeps its
four convs and 28x28 masks at 48 channels, on the 32 foreground-quota RoIs of each image.
"""
from _base.faster_fpn import small_fpn
from _base.mask_fpn import mask_fpn
from _base.shapes import on_shapes

cfg = small_fpn(on_shapes(mask_fpn()))
cfg.mask_head.conv_channels = 48
cfg.mask_target.poly_len = 256  # shapes have at most a few dozen vertices
cfg.train.lr_per_16_images = 0.08
cfg.train.iters_at_batch16 = 600  # 2400 iterations at 4 images: ~10 epochs of 1000 images
cfg.train.lr_steps_at_batch16 = (480, 560)
