"""Backbones: image -> named feature maps with strides (see base.py for the contract)."""
from simpledet.models.backbone.base import Backbone, check_anchored, select_params
from simpledet.models.backbone.resnet import RESNET_DEPTHS, RESNET_VARIANTS, ResNet
from simpledet.models.backbone.trident import TridentResNet
from simpledet.models.layers.normalizer import NORMALIZER_KINDS, Normalizer, make_normalizer

__all__ = [
    "NORMALIZER_KINDS",
    "RESNET_DEPTHS",
    "RESNET_VARIANTS",
    "Backbone",
    "Normalizer",
    "ResNet",
    "TridentResNet",
    "build_backbone",
    "check_anchored",
    "make_normalizer",
    "select_params",
]


def build_backbone(backbone_cfg, last_stage=4, num_devices=1, device=None, res5_dilation=1):
    """The backbone of a ``backbone`` section, built up to ``last_stage`` (4: c2..c5, as with an
    FPN neck; 3: c2..c4, the C4 layout), res5 dilated by ``res5_dilation`` (2: c5 at stride 16,
    the C5-reduce layout). SyncBatchNorm synchronizes over ``num_devices``; ``device``
    (``cfg.runtime.device``) picks the DCN implementation."""
    return ResNet.from_config(backbone_cfg, num_devices=num_devices, last_stage=last_stage,
                              device=device, res5_dilation=res5_dilation)
