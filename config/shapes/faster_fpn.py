"""Quickstart: Faster R-CNN with a small FPN, trained from scratch on the bundled synthetic
shapes dataset (generated on first use) on CPU.

    python detection_train.py --config config/shapes/faster_fpn.py
    python detection_test.py --config config/shapes/faster_fpn.py

The model is the FPN recipe of config/_base/faster_fpn.py scaled to 256x320 images with 6
classes and a 2-core CPU (``small_fpn``): ResNet-18 v1b at half width (32), BatchNorm, trained
from scratch (fixed BN needs pretrained statistics); 48-channel FPN and RPN; a 256-d 2MLP box
head; fewer proposals and rois.
"""
from _base.faster_fpn import faster_fpn, small_fpn
from _base.shapes import on_shapes

cfg = small_fpn(on_shapes(faster_fpn()))
cfg.train.lr_per_16_images = 0.08
cfg.train.iters_at_batch16 = 600  # 2400 iterations at 4 images: ~10 epochs of 1000 images
cfg.train.lr_steps_at_batch16 = (480, 560)
