"""Box heads: RoI features -> class scores and box deltas, their losses and predictions."""
from simpledet.models.bbox_head.base import BboxHead
from simpledet.models.bbox_head.c5_head import C5Head
from simpledet.models.bbox_head.mlp_head import TwoMlpHead

__all__ = ["BboxHead", "C5Head", "TwoMlpHead", "build_bbox_head"]


def build_bbox_head(cfg, backbone):
    """The box head of a FasterRcnnConfig: TwoMlpHead for '2mlp', C5Head (on the backbone's
    res5) for 'c5'."""
    if cfg.bbox_head.type == "2mlp":
        return TwoMlpHead(cfg)
    return C5Head(cfg, backbone)
