"""Faster R-CNN with an FPN neck (P2-P6) and the 2MLP box head: SimpleDet's faster_*_fpn_1x.

Leaves call ``faster_fpn()`` and change a few fields; ``fpn_recipe`` is the same recipe on
another two-stage family's config (Mask R-CNN: config/_base/mask_fpn.py, Cascade R-CNN:
config/_base/cascade_fpn.py). What every Faster R-CNN shares (SGD at 0.02 per 16 images,
90k/60k/80k iterations at batch 16, 800x1333 input, fixed BN, test thresholds) are the schema
defaults in simpledet/config/faster_rcnn.py; this file pins what makes the FPN family, so the
recipe reads in one place.
"""
from simpledet.config.faster_rcnn import FasterRcnnConfig


def faster_fpn() -> FasterRcnnConfig:
    """A fresh FPN Faster R-CNN config (ResNet-50 v1 backbone until a leaf changes it)."""
    return fpn_recipe(FasterRcnnConfig())


def fpn_recipe(cfg):
    """The FPN two-stage recipe on ``cfg`` (a FasterRcnnConfig or a subclass); returns it."""
    cfg.neck.type = "fpn"  # RPN on P2-P6 (strides 4..64), RoIAlign on P2-P5
    cfg.bbox_head.type = "2mlp"
    cfg.bbox_head.class_agnostic = False
    # One anchor size per level: 8 x stride = 32, 64, ..., 512 pixels.
    cfg.rpn.anchor_scales = (8.0,)
    cfg.rpn.anchor_ratios = (0.5, 1.0, 2.0)
    cfg.rpn.conv_channels = 256
    # SimpleDet's FPN values: top 2000 per level before NMS, 2000 kept per image in
    # training; 1000 / 1000 in test.
    cfg.rpn.train_pre_nms = 2000
    cfg.rpn.train_post_nms = 2000
    cfg.rpn.test_pre_nms = 1000
    cfg.rpn.test_post_nms = 1000
    cfg.roi_sampler.batch_per_image = 512
    cfg.roi_sampler.fg_fraction = 0.25
    cfg.train.clip_gradient = None
    cfg.train.warmup_iters = 500  # from lr / 3, as SimpleDet's "gradual" warmup
    cfg.train.warmup_factor = 1.0 / 3.0
    return cfg


def small_fpn(cfg):
    """The CPU quickstarts' sizes for small (256-480 px) inputs and a few classes: 48-channel
    FPN and RPN (the P2 output and RPN convs are a third of the FLOPs at 64; AP 0.505 vs 0.503
    at 64 on shapes, 2080 iterations), 1000 / 300 proposals per image in training, 500 / 300 in
    test, 64 RoIs per image half of them foreground, a 256-d box head; returns ``cfg``."""
    cfg.neck.channels = 48
    cfg.rpn.conv_channels = 48
    cfg.rpn.train_pre_nms = 1000
    cfg.rpn.train_post_nms = 300
    cfg.rpn.test_pre_nms = 500
    cfg.rpn.test_post_nms = 300
    cfg.roi_sampler.batch_per_image = 64
    cfg.roi_sampler.fg_fraction = 0.5  # 32 foreground rois per image, with half the background
    cfg.bbox_head.fc_dim = 256
    return cfg
