"""Mask R-CNN, ResNet-50 v1 + FPN with GroupNorm everywhere, 1x schedule (detectron2's
mask_rcnn_R_50_FPN_*_gn): GN in the backbone, the FPN, the 4conv1fc box head and the mask
head's four convs. ``pretrain``: an ImageNet GroupNorm ResNet-50 (see faster_r50v1_fpn_gn_1x).
"""
from _base.mask_fpn import mask_fpn

cfg = mask_fpn()
cfg.backbone.variant = "v1"
cfg.backbone.depth = 50
cfg.backbone.normalizer = "gn"
cfg.pretrain = "pretrain_model/resnet-v1-50-gn-0000.params"
cfg.neck.normalizer = "gn"
cfg.bbox_head.type = "4conv1fc"
cfg.bbox_head.normalizer = "gn"
cfg.mask_head.normalizer = "gn"
