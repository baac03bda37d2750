"""Model builders by data-flow stage: backbone -> neck -> rpn -> roi_extractor -> bbox_head
(two-stage), backbone -> neck -> dense_heads (one-stage: RetinaNet).

Each builder takes Symbols and returns Symbols, under its own name prefix (backbone: none, its
names are the pretrained files'; neck ``fpn_``; rpn ``rpn_``; RoIAlign ``roi_``; box head
``bbox_``; RetinaNet's head ``retina_``). A detector reports each component's boundaries to a
``simpledet.models.precision.PrecisionPlan``, which runs the chosen components in fp16/bf16.
"""
from simpledet.models.backbone import (
    Backbone,
    Normalizer,
    ResNet,
    build_backbone,
    check_anchored,
    select_params,
)
from simpledet.models.bbox_head import BboxHead, C5Head, ConvFcHead, TwoMlpHead, build_bbox_head
from simpledet.models.neck import (
    C5ReduceNeck,
    FpnNeck,
    IdentityNeck,
    Neck,
    RetinaFpnNeck,
    build_neck,
)
from simpledet.models.roi_extractor import FpnRoiExtractor
from simpledet.models.rpn import RpnHead, RpnHeadBase

__all__ = ["Backbone", "BboxHead", "C5Head", "C5ReduceNeck", "ConvFcHead", "FpnNeck",
           "FpnRoiExtractor", "IdentityNeck", "Neck", "Normalizer", "ResNet", "RetinaFpnNeck",
           "RpnHead", "RpnHeadBase", "TwoMlpHead", "build_backbone", "build_bbox_head",
           "build_neck", "check_anchored", "select_params"]
