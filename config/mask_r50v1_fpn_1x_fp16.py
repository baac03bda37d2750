"""Mask R-CNN, ResNet-50 v1 + FPN, 1x, in fp16 mixed precision on GPUs: mask_r50v1_fpn_1x with
precision 'fp16'. Backbone, FPN, RPN, box and mask heads compute in float16; losses,
proposals, sampling, RoIAlign, mask targets and decoding stay float32; weights stay float32;
dynamic loss scaling (cfg.mixed_precision).
"""
from _base.mask_fpn import mask_fpn

cfg = mask_fpn()
cfg.backbone.variant = "v1"
cfg.backbone.depth = 50
cfg.precision = "fp16"
cfg.runtime.device = "gpu"  # MXNet has no float16 convolution on CPU
