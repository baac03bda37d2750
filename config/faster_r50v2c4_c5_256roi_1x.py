"""Faster R-CNN, ResNet-50 v2 (MXNet model-zoo weights) C4 layout, C5 head, 256 RoIs, 1x."""
from _base.faster_c4 import faster_c4

cfg = faster_c4()
cfg.backbone.variant = "v2"
cfg.backbone.depth = 50
# SimpleDet's 256-RoI recipe: no ground truth among the proposals, a longer warmup.
cfg.roi_sampler.batch_per_image = 256
cfg.roi_sampler.add_gt_as_proposals = False
cfg.train.warmup_iters = 3000
