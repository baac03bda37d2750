"""RetinaNet, ResNet-50 v1 + P3-P7 FPN, 1x, in fp16 mixed precision on GPUs: retina_r50v1_fpn_1x
with precision 'fp16' (SimpleDet's retina_r50v1_fpn_1x_fp16). Backbone, FPN and the head's
towers compute in float16; the focal loss, the box loss, the sigmoid and the post-processing
stay float32; weights stay float32; dynamic loss scaling (cfg.mixed_precision). tests/config
checks it equals its fp32 twin but for the precision.
"""
from _base.retina_fpn import retina_fpn

cfg = retina_fpn()
cfg.backbone.variant = "v1"
cfg.backbone.depth = 50
cfg.precision = "fp16"
cfg.runtime.device = "gpu"  # MXNet has no float16 convolution on CPU
