"""RetinaNet with its P3-P7 FPN: SimpleDet's retina_*_fpn_1x.

Leaves call ``retina_fpn()`` and change a few fields. The model's defaults (P6 from C5, four
3x3 convs of 256 per tower, 9 anchors of 4 * 2^(0, 1/3, 2/3) strides, IoU 0.5 / 0.4, focal
loss alpha 0.25 gamma 2, smooth L1 beta 0.11, test top 1000 per level, score 0.05, NMS 0.5, 100
per image) are the schema's (simpledet/config/retinanet.py); this file pins the schedule that
makes the recipe, so it reads in one place.
"""
from simpledet.config.retinanet import RetinaNetConfig


def retina_fpn() -> RetinaNetConfig:
    """A fresh RetinaNet config (ResNet-50 v1 backbone until a leaf changes it)."""
    cfg = RetinaNetConfig()
    cfg.neck.channels = 256
    cfg.neck.p6_input = "c5"
    cfg.head.num_convs = 4
    cfg.head.conv_channels = 256
    # RetinaNet's lr is half Faster R-CNN's: 0.01 per 16 images (the focal loss sums over
    # ~100k anchors per image, normalized by a few hundred foreground ones).
    cfg.train.lr_per_16_images = 0.01
    cfg.train.iters_at_batch16 = 90000
    cfg.train.lr_steps_at_batch16 = (60000, 80000)
    cfg.train.warmup_iters = 500  # from lr / 3, as SimpleDet's "gradual" warmup
    cfg.train.warmup_factor = 1.0 / 3.0
    cfg.test.score_thresh = 0.05
    cfg.test.nms_iou = 0.5
    cfg.test.max_det = 100
    return cfg


def small_retina(cfg):
    """The CPU quickstart's model for small (256-480 px) inputs and a few classes, trained from
    scratch: 64-channel FPN and towers (the towers on P3 cost most of the head), and a
    BatchNorm per level after each tower conv (``head.norm='bn'``): narrow unnormalized towers
    barely learn at the paper's N(0, 0.01) init; returns ``cfg``."""
    cfg.neck.channels = 64
    cfg.head.conv_channels = 64
    cfg.head.norm = "bn"
    return cfg
