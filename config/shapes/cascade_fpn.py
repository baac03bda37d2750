"""Quickstart: Cascade R-CNN with a small FPN, trained from scratch on the bundled synthetic
shapes dataset (generated on first use) on CPU.

    python detection_train.py --config config/shapes/cascade_fpn.py
    python detection_test.py --config config/shapes/cascade_fpn.py

The model and schedule are the Faster R-CNN FPN quickstart's (config/shapes/faster_fpn.py: a
half-width ResNet-18 v1b, 48-channel FPN and RPN, 64 RoIs per image, 256-d box heads, 2400
iterations of 4 images) with the three cascade stages of config/_base/cascade_fpn.py.
"""
from _base.cascade_fpn import cascade_fpn
from _base.faster_fpn import small_fpn
from _base.shapes import on_shapes

cfg = small_fpn(on_shapes(cascade_fpn()))
cfg.train.lr_per_16_images = 0.08
cfg.train.iters_at_batch16 = 600  # 2400 iterations at 4 images: ~10 epochs of 1000 images
cfg.train.lr_steps_at_batch16 = (480, 560)
