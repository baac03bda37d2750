"""TridentNet, C4 layout: SimpleDet's tridentnet_*c4_c5_1x. The detection part is the C4 Faster
R-CNN recipe (``c4_recipe`` of _base/faster_c4.py); the trident part keeps the schema defaults of
simpledet/config/tridentnet.py (branches with dilations 1 / 2 / 3 over res4's units but the
first, sharing parameters; valid ranges (0, 90), (30, 160), (90, inf); all branches merged by
NMS at test). As SimpleDet's recipe each branch-image gets 500 training proposals and samples 128
RoIs, half foreground, without the gt among the candidates.

Leaves call ``trident_c4()`` and change a few fields (depth, ``trident.test_branch = 1`` for
TridentFast).
"""
from _base.faster_c4 import c4_recipe

from simpledet.config.tridentnet import TridentNetConfig


def trident_c4() -> TridentNetConfig:
    """A fresh C4 TridentNet config (ResNet-50 v2 backbone, MXNet model-zoo weights)."""
    cfg = c4_recipe(TridentNetConfig())
    cfg.backbone.variant = "v2"
    cfg.backbone.depth = 50
    cfg.rpn.train_post_nms = 500  # per branch: 1500 per image
    cfg.roi_sampler.batch_per_image = 128  # per branch: 384 per image
    cfg.roi_sampler.fg_fraction = 0.5
    cfg.roi_sampler.add_gt_as_proposals = False
    cfg.train.warmup_iters = 3000
    return cfg
