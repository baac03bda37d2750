"""The RPN-only config schema (proposals alone): backbone, neck and RPN on the run settings
every family shares (``simpledet.config.common``).

The model sections and their derived values (``layout()``, ``cfg.rpn_feature_strides``, the
``pretrain='auto'`` file) are Faster R-CNN's first stage, shared through
``simpledet.config.faster_rcnn.RpnStageConfig``: the ``rpn`` section is
``simpledet.config.faster_rcnn.RpnConfig`` (anchors, anchor targets, proposal counts), not this
module's family class of the same name. There is no RoI sampling, RoI extraction or box head.
What the test graph outputs is set by ``rpn.test_pre_nms`` (per level) and ``rpn.test_post_nms``
(per image: the proposals evaluated by COCO AR@100/300/1000, so at least 1000 for AR@1000);
the ``rpn.train_*_nms`` counts are unused (no proposals are made in training). The base
``config/_base/rpn_fpn.py`` pins the FPN recipe.
"""
from simpledet.config.faster_rcnn import RpnStageConfig
from simpledet.detectors.rpn import RpnDetector

__all__ = ["RpnConfig"]


class RpnConfig(RpnStageConfig):
    """A complete RPN-only experiment: the run settings (see DetectorConfig) and the backbone,
    neck and rpn sections (see RpnStageConfig); evaluated by proposal AR.

    ``pretrain='auto'`` stands for ``pretrain_model/{backbone.arch_name}-0000.params``.
    """

    detector_class = RpnDetector
    precision_components = RpnDetector.precision_components
