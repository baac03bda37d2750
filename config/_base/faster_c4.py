"""Faster R-CNN, C4 layout: RPN and RoIAlign on C4 (stride 16), res5 (C5) box head.

SimpleDet's faster_*c4_c5_*roi_1x recipe. Leaves call ``faster_c4()`` and change a few fields
(backbone variant, RoIs per image); ``c4_recipe`` is the same recipe on another C4 family's
config (TridentNet: config/_base/trident_c4.py). Shared values are the schema defaults in
simpledet/config/faster_rcnn.py. Deliberate difference from SimpleDet: the input keeps the
common 800 x 1333 (SimpleDet's C4 configs trained at long side 1200 and tested at 2000).
"""
from simpledet.config.faster_rcnn import FasterRcnnConfig


def faster_c4() -> FasterRcnnConfig:
    """A fresh C4 Faster R-CNN config (ResNet-50 v1 backbone, 512 RoIs)."""
    return c4_recipe(FasterRcnnConfig())


def c4_recipe(cfg):
    """The C4 two-stage recipe on ``cfg`` (a FasterRcnnConfig or a subclass); returns it."""
    cfg.neck.type = "none"  # heads read c4 directly
    cfg.bbox_head.type = "c5"  # res5 at stride 1 on 7x7 RoIs, then global pooling
    cfg.bbox_head.class_agnostic = True
    # One level, so five sizes: (2..32) x 16 = 32..512 pixels.
    cfg.rpn.anchor_scales = (2.0, 4.0, 8.0, 16.0, 32.0)
    cfg.rpn.anchor_ratios = (0.5, 1.0, 2.0)
    cfg.rpn.conv_channels = 512
    cfg.rpn.train_pre_nms = 12000
    cfg.rpn.train_post_nms = 2000
    cfg.rpn.test_pre_nms = 6000
    cfg.rpn.test_post_nms = 1000
    cfg.roi_sampler.batch_per_image = 512
    cfg.roi_sampler.fg_fraction = 0.25
    cfg.train.clip_gradient = 35.0
    # SimpleDet warms up from lr 0 for 750 iterations at batch 16.
    cfg.train.warmup_iters = 750
    cfg.train.warmup_factor = 0.0
    return cfg
