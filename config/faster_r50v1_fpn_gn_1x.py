"""Faster R-CNN, ResNet-50 v1 + FPN with GroupNorm everywhere, 1x schedule (detectron2's GN
recipe, Wu & He 2018): GN (32 groups) in the backbone, after every FPN lateral and output conv,
and in the 4conv1fc box head (four 3x3 convs of 256 + GN, one fc of 1024).

GN layers name their affine ``*_gamma`` / ``*_beta`` like BatchNorm, but a BN-pretrained file
is not a GN network's weights: ``pretrain`` points at an ImageNet GroupNorm ResNet-50 in the
MSRA v1 layout (detectron2's R-50-GN, converted to our names), not at the BN file 'auto' picks.
"""
from _base.faster_fpn import faster_fpn

cfg = faster_fpn()
cfg.backbone.variant = "v1"
cfg.backbone.depth = 50
cfg.backbone.normalizer = "gn"
cfg.pretrain = "pretrain_model/resnet-v1-50-gn-0000.params"
cfg.neck.normalizer = "gn"
cfg.bbox_head.type = "4conv1fc"
cfg.bbox_head.normalizer = "gn"
