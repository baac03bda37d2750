"""Box heads: RoI features -> class scores and box deltas, their losses and predictions."""
from simpledet.models.bbox_head.base import BboxHead
from simpledet.models.bbox_head.c5_head import C5Head
from simpledet.models.bbox_head.mlp_head import TwoMlpHead

__all__ = ["BboxHead", "C5Head", "TwoMlpHead", "build_bbox_head"]


def build_bbox_head(head_cfg, num_classes, test_cfg, backbone):
    """The box head of a ``bbox_head`` section: TwoMlpHead for '2mlp', C5Head (on the
    backbone's res5) for 'c5'; num_classes and the ``test`` section as BboxHead."""
    if head_cfg.type == "2mlp":
        return TwoMlpHead(head_cfg, num_classes, test_cfg)
    return C5Head(head_cfg, num_classes, test_cfg, backbone)
