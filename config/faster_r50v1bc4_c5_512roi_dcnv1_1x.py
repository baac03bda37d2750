"""Faster R-CNN, ResNet-50 v1b C4 layout with the C5 box head, 512 RoIs per image, 1x, with
DCNv1 (deformable convs) in res3-res5 (res5 runs in the box head, deformable too), as
SimpleDet's DCN model-zoo rows. The offset convs start at zero, so the ImageNet v1b weights load
unchanged (pretrain 'auto': resnet50_v1b)."""
from _base.faster_c4 import faster_c4

cfg = faster_c4()
cfg.backbone.variant = "v1b"
cfg.backbone.depth = 50
cfg.backbone.dcn_stages = (3, 4, 5)
cfg.backbone.dcn_version = 1
cfg.roi_sampler.batch_per_image = 512
