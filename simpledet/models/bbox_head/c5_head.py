"""The C5 box head of the C4 layout: the backbone's res5 stage on each RoI, then global pooling.

As SimpleDet's BboxC5V1Head / BboxC5Head: RoIAlign pools 7x7 RoIs from c4 (stride 16); res5
runs at stride 1 (the RoIs stay 7x7; detectron2 instead pools 14x14 and keeps res5's stride 2,
which costs about the same), v2 adds its final ``bn1`` + relu, and a global average pool gives
one 2048-d (512-d for depth 18/34) vector per RoI.

res5 keeps the backbone's names (``stage4_unit{i}_*``, ``bn1``), with no ``bbox_`` prefix, so
its weights load from the pretrained classifier and the backbone's freeze patterns apply.
"""
import mxnet as mx

from simpledet.models.bbox_head.base import BboxHead

__all__ = ["C5Head"]


class C5Head(BboxHead):
    """res5 + global average pooling.

    Args:
        head_cfg, num_classes, test_cfg: as BboxHead.
        backbone: the ResNet whose ``res5`` builds the stage (same variant and normalizer).
        prefix: name prefix of the pooling and predictor layers.
    """

    def __init__(self, head_cfg, num_classes, test_cfg, backbone, prefix="bbox_"):
        super().__init__(head_cfg, num_classes, test_cfg, prefix)
        self.backbone = backbone

    def _head_feature(self, roi_feat, tag):
        if tag or self.suffix:
            raise ValueError("C5Head runs the backbone's res5 (its names are the pretrained "
                             "file's): it cannot take a suffix or run twice")
        res5 = self.backbone.res5(roi_feat, stride=self.head_cfg.c5_stride)
        with mx.name.Prefix(self.prefix):
            pooled = mx.sym.Pooling(res5, kernel=(1, 1), global_pool=True, pool_type="avg",
                                    name="pool")
            return mx.sym.flatten(pooled, name="flatten")
