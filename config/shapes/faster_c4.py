"""Quickstart, C4 layout: Faster R-CNN with RPN and RoIAlign on c4 and a res5 box head,
trained from scratch on the bundled synthetic shapes dataset (generated on first use) on CPU.

    python detection_train.py --config config/shapes/faster_c4.py
    python detection_test.py --config config/shapes/faster_c4.py

The C4 recipe of config/_base/faster_c4.py scaled to 256x320 images, 6 classes and a 2-core
CPU: half-width ResNet-18 v1b with BatchNorm from scratch, anchors 16..256 pixels on c4,
32 rois per image (half foreground), res5 at stride 2 on the 7x7 RoIs (3x cheaper than
stride 1), ~13 epochs: the res5 head on every RoI makes a C4 step costlier than the FPN's.
"""
from _base.faster_c4 import faster_c4
from _base.shapes import on_shapes

cfg = on_shapes(faster_c4())
cfg.rpn.anchor_scales = (1.0, 2.0, 4.0, 8.0, 16.0)
cfg.rpn.conv_channels = 128
cfg.rpn.train_pre_nms = 2000
cfg.rpn.train_post_nms = 500
cfg.rpn.test_pre_nms = 1000
cfg.rpn.test_post_nms = 300
cfg.roi_sampler.batch_per_image = 32
cfg.roi_sampler.fg_fraction = 0.5  # 16 foreground rois per image (8 at 0.25 starve the head)
cfg.bbox_head.c5_stride = 2

cfg.train.lr_per_16_images = 0.08
cfg.train.iters_at_batch16 = 800  # 3200 iterations at 4 images: ~13 epochs of 1000 images
cfg.train.lr_steps_at_batch16 = (640, 740)
cfg.train.warmup_factor = 1.0 / 3.0
