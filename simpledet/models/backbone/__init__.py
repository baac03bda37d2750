"""Backbones: image -> named feature maps with strides (see base.py for the contract)."""
from simpledet.models.backbone.base import Backbone, check_anchored, select_params
from simpledet.models.backbone.normalizer import NORMALIZER_KINDS, Normalizer, make_normalizer
from simpledet.models.backbone.resnet import RESNET_DEPTHS, RESNET_VARIANTS, ResNet

__all__ = [
    "NORMALIZER_KINDS",
    "RESNET_DEPTHS",
    "RESNET_VARIANTS",
    "Backbone",
    "Normalizer",
    "ResNet",
    "build_backbone",
    "check_anchored",
    "make_normalizer",
    "select_params",
]


def build_backbone(cfg):
    """The backbone of a FasterRcnnConfig: c2..c5 with an FPN neck, c2..c4 for the C4 layout.

    SyncBatchNorm synchronizes over ``cfg.runtime.num_devices`` devices.
    """
    return ResNet.from_config(cfg.backbone, num_devices=cfg.runtime.num_devices,
                              last_stage=cfg.layout().backbone_last_stage)
