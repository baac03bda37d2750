"""Cascade R-CNN, C5-reduce layout: SimpleDet's cascade_*_c5_red_1x ("red" = reduce).

res5 runs once on the whole image at stride 1 with dilation 2 (c5 stays at stride 16, as
detectron2's DC5), a 1x1 conv + ReLU reduces it to ``neck.channels`` = 1024 (SimpleDet's
``CascadeNeck``), and the three stages pool 7x7 RoIs from that map into light 2MLP heads
(1024-d). The RPN reads c4 with the C4 recipe's single level (``c4_recipe`` of
_base/faster_c4.py: anchors 32..512 px, 512-channel conv, 12000/2000 proposals in training,
6000/1000 in test, gradient clipping at 35, warmup from lr 0). The stages keep the schema
defaults of simpledet/config/cascade_rcnn.py (IoU 0.5 / 0.6 / 0.7, their stds, loss weights
1 / 0.5 / 0.25); as SimpleDet's config every stage samples 256 RoIs per image without the gt
boxes among them, and the warmup is 3000 iterations.

Deliberate difference from SimpleDet, as the C4 base: the input keeps the common 800 x 1333
(SimpleDet trained at long side 1200 and tested at 2000).

Leaves call ``cascade_c5_red()`` and set the backbone.
"""
from _base.faster_c4 import c4_recipe

from simpledet.config.cascade_rcnn import CascadeRcnnConfig


def cascade_c5_red() -> CascadeRcnnConfig:
    """A fresh C5-reduce Cascade R-CNN config (ResNet-50 v1 backbone until a leaf changes it)."""
    cfg = c4_recipe(CascadeRcnnConfig())  # the single-level RPN and schedule of the C4 family
    cfg.neck.type = "c5_reduce"  # RPN on c4; RoIAlign on ReLU(1x1 conv(dilated c5))
    cfg.neck.channels = 1024  # SimpleDet's conv_channel of the reduction
    cfg.bbox_head.type = "2mlp"
    cfg.bbox_head.class_agnostic = True  # every stage refines one box per RoI
    cfg.roi_sampler.batch_per_image = 256
    cfg.roi_sampler.add_gt_as_proposals = False  # SimpleDet's proposal_wo_gt = True
    cfg.train.warmup_iters = 3000
    return cfg
