"""Quickstart: RPN-only (proposals alone) with a small FPN, trained from scratch on the bundled
synthetic shapes dataset (generated on first use) on CPU.

    python detection_train.py --config config/shapes/rpn_fpn.py
    python detection_test.py --config config/shapes/rpn_fpn.py     # proposal AR@100/300/1000

The model is config/_base/rpn_fpn.py scaled to 256x320 images and a 2-core CPU, as the Faster
quickstart (config/shapes/faster_fpn.py): ResNet-18 v1b at half width (32), BatchNorm, trained
from scratch; 48-channel FPN and RPN head; 1000 proposals per image in test. Measured: AR@100
0.503, AR@300 0.549, AR@1000 0.582 after 7-9 min on 2 cores (README, "RPN-only quickstart").
"""
from _base.rpn_fpn import rpn_fpn, small_rpn_fpn
from _base.shapes import on_shapes

cfg = small_rpn_fpn(on_shapes(rpn_fpn()))
cfg.train.lr_per_16_images = 0.08
cfg.train.iters_at_batch16 = 400  # 1600 iterations at 4 images: ~6 epochs of 1000 images
cfg.train.lr_steps_at_batch16 = (320, 373)
