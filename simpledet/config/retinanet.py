"""The RetinaNet config schema: backbone (Faster R-CNN's BackboneConfig), the P3-P7 FPN neck,
the head, the anchors and their targets, on the run settings every family shares
(``simpledet.config.common``; the ``test`` section's score_thresh / nms_iou / max_det are the
post-processing's).

Defaults are RetinaNet's recipe as SimpleDet's ``retina_r50v1_fpn_1x`` and detectron2 use it:
P3-P7 with 256 channels, P6 from C5; four 3x3 convs of 256 per tower; 9 anchors per location
(3 scales 4 * 2^(0, 1/3, 2/3) strides x ratios 0.5, 1, 2); IoU >= 0.5 foreground, < 0.4
background; focal loss alpha 0.25 gamma 2; smooth L1 beta 0.11; test: score > 0.05, top 1000
per level, NMS 0.5, 100 per image. The family base (``config/_base/retina_fpn.py``) pins the
schedule. Strides come from the neck, not from fields.
"""
import warnings
from typing import Literal

from simpledet.config.common import DetectorConfig
from simpledet.config.faster_rcnn import BackboneConfig
from simpledet.config.schema import (
    Section,
    all_positive,
    field,
    fraction,
    non_negative,
    positive,
)
from simpledet.detectors.retinanet import RetinaNet

__all__ = ["RetinaAnchorConfig", "RetinaHeadConfig", "RetinaNeckConfig", "RetinaNetConfig",
           "RetinaTargetConfig"]


class RetinaNeckConfig(Section):
    """RetinaNet's FPN: p3..p5 from c3..c5, p6 and p7 by 3x3 stride-2 convs
    (simpledet.models.neck.RetinaFpnNeck).

    Attributes:
        channels: output channels of every level.
        p6_input: 'c5' (the paper, SimpleDet, detectron2) or 'p5', the map p6 is made from.
    """

    channels: int = field(256, check=positive)
    p6_input: Literal["c5", "p5"] = "c5"


class RetinaHeadConfig(Section):
    """The head (simpledet.models.dense_heads.RetinaHead): towers, losses, test top-k.

    Attributes:
        num_convs: 3x3 conv + ReLU layers in each tower (classification, regression).
        conv_channels: their channels.
        norm: a normalization after each tower conv (detectron2's ``norm`` option): 'none'
            (the paper's head), 'gn' (GroupNorm shared over the levels like the convs; MXNet
            1.9's CPU GroupNorm made the shapes quickstart's step 2.9x slower) or 'bn' (one
            BatchNorm per level and layer, batch statistics per device, detectron2's
            "domain-specific" BN). Normalized towers start learning at once and tolerate
            higher learning rates, from scratch too.
        norm_groups: GroupNorm's channel groups (conv_channels must be divisible by it).
        prior_prob: every anchor's initial foreground probability (the class logits' bias is
            -log((1 - p) / p)).
        focal_alpha / focal_gamma: the focal loss's weight of positives and focusing exponent.
        reg_beta: smooth L1 transition of the box loss (0: L1).
        test_pre_nms: candidates kept per level and image before the NMS (top-k by score).
    """

    num_convs: int = field(4, check=positive)
    conv_channels: int = field(256, check=positive)
    norm: Literal["none", "gn", "bn"] = "none"
    norm_groups: int = field(32, check=positive)
    prior_prob: float = field(0.01, check=fraction)
    focal_alpha: float = field(0.25, check=fraction)
    focal_gamma: float = field(2.0, check=non_negative)
    reg_beta: float = field(0.11, check=non_negative)
    test_pre_nms: int = field(1000, check=positive)

    def validate(self):
        if not 0 < self.prior_prob < 1:
            raise self.error("prior_prob", f"must be in (0, 1), got {self.prior_prob}")
        if self.norm == "gn" and self.conv_channels % self.norm_groups:
            raise self.error("norm_groups", f"({self.norm_groups}) must divide "
                             f"head.conv_channels ({self.conv_channels}) for GroupNorm")


class RetinaAnchorConfig(Section):
    """The anchors of every level: sizes in units of the level's stride.

    Attributes:
        octave_base_scale: the smallest anchor size, in strides (4: 32 px on p3).
        scales_per_octave: anchor sizes per octave: scales octave_base_scale * 2 ** (i / n),
            i = 0..n-1.
        ratios: anchor aspect ratios (height / width).
    """

    octave_base_scale: float = field(4.0, check=positive)
    scales_per_octave: int = field(3, check=positive)
    ratios: tuple[float, ...] = field((0.5, 1.0, 2.0), check=all_positive)

    @property
    def scales(self) -> tuple:
        """Anchor sizes in strides: octave_base_scale * 2 ** (i / scales_per_octave)."""
        return tuple(self.octave_base_scale * 2.0 ** (i / self.scales_per_octave)
                     for i in range(self.scales_per_octave))

    @property
    def num_anchors(self) -> int:
        """Anchors per location: len(scales) * len(ratios)."""
        return self.scales_per_octave * len(self.ratios)


class RetinaTargetConfig(Section):
    """How anchors are labelled (simpledet.data.targets.RetinaAnchorAssigner).

    Attributes:
        pos_iou: anchors with max IoU >= pos_iou are foreground.
        neg_iou: anchors with max IoU < neg_iou are background; in between ignored.
        low_quality_matches: each gt's best anchors are foreground too (detectron2).
        crowd_iof: a background anchor covered more than this by a crowd region is ignored.
    """

    pos_iou: float = field(0.5, check=fraction)
    neg_iou: float = field(0.4, check=fraction)
    low_quality_matches: bool = True
    crowd_iof: float = field(0.5, check=fraction)

    def validate(self):
        if self.neg_iou > self.pos_iou:
            raise self.error("neg_iou", f"({self.neg_iou}) must be <= targets.pos_iou "
                             f"({self.pos_iou})")


class RetinaNetConfig(DetectorConfig):
    """A complete RetinaNet experiment: the run settings (see DetectorConfig) and the model.

    ``pretrain='auto'`` stands for ``pretrain_model/{backbone.arch_name}-0000.params``.
    """

    detector_class = RetinaNet
    precision_components = RetinaNet.precision_components

    backbone: BackboneConfig
    neck: RetinaNeckConfig
    head: RetinaHeadConfig
    anchors: RetinaAnchorConfig
    targets: RetinaTargetConfig

    def auto_pretrain_path(self) -> str:
        """pretrain_model/{backbone arch_name}-0000.params."""
        return f"pretrain_model/{self.backbone.arch_name}-0000.params"

    def validate(self):
        if self.pretrain_path is None and self.backbone.normalizer == "fixbn":
            # A warning, not an error: smoke tests train zoo configs from scratch on purpose.
            warnings.warn("backbone.normalizer is 'fixbn' but pretrain is none: frozen "
                          "BatchNorm keeps its initial statistics (identity); consider "
                          "backbone.normalizer='bn', 'syncbn' or 'gn'", stacklevel=2)
        super().validate()
