"""Box heads: RoI features -> class scores and box deltas, their losses and predictions."""
from simpledet.models.bbox_head.base import BboxHead
from simpledet.models.bbox_head.c5_head import C5Head
from simpledet.models.bbox_head.conv_fc_head import ConvFcHead
from simpledet.models.bbox_head.mlp_head import TwoMlpHead

__all__ = ["BboxHead", "C5Head", "ConvFcHead", "TwoMlpHead", "build_bbox_head"]


def build_bbox_head(head_cfg, num_classes, test_cfg, backbone=None, suffix=""):
    """The box head of a ``bbox_head`` section: TwoMlpHead for '2mlp', ConvFcHead for
    '4conv1fc', C5Head (on the backbone's res5) for 'c5'; num_classes, the ``test`` section and
    ``suffix`` (Cascade R-CNN's stages; not for 'c5') as BboxHead."""
    if head_cfg.type == "2mlp":
        return TwoMlpHead(head_cfg, num_classes, test_cfg, suffix=suffix)
    if head_cfg.type == "4conv1fc":
        return ConvFcHead(head_cfg, num_classes, test_cfg, suffix=suffix)
    if suffix:
        raise ValueError("bbox_head.type 'c5' runs the backbone's res5: it cannot take a suffix")
    return C5Head(head_cfg, num_classes, test_cfg, backbone)
