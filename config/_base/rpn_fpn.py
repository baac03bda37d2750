"""RPN-only (proposals alone) with an FPN neck (P2-P6): the first stage of faster_*_fpn_1x,
trained and evaluated by itself (COCO proposal AR@100/300/1000, class-agnostic).

Leaves call ``rpn_fpn()`` and change a few fields. The schedule, input size, fixed BN and the
anchor-target rules are the schema defaults (simpledet/config/faster_rcnn.py, shared with
Faster R-CNN); this file pins what makes the FPN RPN, as config/_base/faster_fpn.py does.
"""
from simpledet.config.rpn import RpnConfig


def rpn_fpn() -> RpnConfig:
    """A fresh FPN RPN config (ResNet-50 v1 backbone until a leaf changes it)."""
    cfg = RpnConfig()
    cfg.neck.type = "fpn"  # RPN on P2-P6 (strides 4..64)
    # One anchor size per level: 8 x stride = 32, 64, ..., 512 pixels.
    cfg.rpn.anchor_scales = (8.0,)
    cfg.rpn.anchor_ratios = (0.5, 1.0, 2.0)
    cfg.rpn.conv_channels = 256
    # Test: top 1000 per level before the joint NMS, 1000 kept per image (AR@1000 needs them).
    # Training makes no proposals: the train_*_nms counts are unused.
    cfg.rpn.test_pre_nms = 1000
    cfg.rpn.test_post_nms = 1000
    cfg.train.clip_gradient = None
    cfg.train.warmup_iters = 500  # from lr / 3, as SimpleDet's "gradual" warmup
    cfg.train.warmup_factor = 1.0 / 3.0
    return cfg


def small_rpn_fpn(cfg):
    """The CPU quickstart's sizes for small (256-320 px) inputs: 48-channel FPN and RPN head,
    as config/_base/faster_fpn.small_fpn; 1000 proposals per image in test; returns ``cfg``."""
    cfg.neck.channels = 48
    cfg.rpn.conv_channels = 48
    return cfg
