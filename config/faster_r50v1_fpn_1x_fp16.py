"""Faster R-CNN, ResNet-50 v1 + FPN, 1x, in fp16 mixed precision on GPUs: faster_r50v1_fpn_1x
with precision 'fp16' (SimpleDet's faster_r50v1_fpn_1x_fp16). Backbone, FPN and heads compute
in float16; losses, proposals, RoIAlign and box decoding stay float32; weights stay float32;
dynamic loss scaling (cfg.mixed_precision). tests/config checks it equals its fp32 twin but for
the precision.
"""
from _base.faster_fpn import faster_fpn

cfg = faster_fpn()
cfg.backbone.variant = "v1"
cfg.backbone.depth = 50
cfg.precision = "fp16"
cfg.runtime.device = "gpu"  # MXNet has no float16 convolution on CPU
