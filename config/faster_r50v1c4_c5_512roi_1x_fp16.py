"""Faster R-CNN, ResNet-50 v1 C4 layout with the C5 box head, 512 RoIs per image, 1x, in fp16
mixed precision on GPUs: faster_r50v1c4_c5_512roi_1x with precision 'fp16' (SimpleDet's
faster_r50v1c4_c5_512roi_1x_fp16). tests/config checks it equals its fp32 twin but for the
precision.
"""
from _base.faster_c4 import faster_c4

cfg = faster_c4()
cfg.backbone.variant = "v1"
cfg.backbone.depth = 50
cfg.roi_sampler.batch_per_image = 512
cfg.precision = "fp16"
cfg.runtime.device = "gpu"  # MXNet has no float16 convolution on CPU
