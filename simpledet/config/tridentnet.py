"""The TridentNet config schema: Faster R-CNN's sections (simpledet.config.faster_rcnn), C4 layout
only, plus ``trident``: the branches, their valid ranges and the test mode.

Defaults are SimpleDet's ``tridentnet_r50v2c4_c5_1x``: three branches with 3x3 dilations 1 / 2
/ 3 over all res4 units but the first, sharing their parameters; scale-aware training with
valid ranges (0, 90), (30, 160), (90, inf) in input pixels (sqrt of the box area on the scaled
image); anchors overlapping a gt outside a branch's range by IoU > 0.3 ignored by that branch;
at test all branches, their detections filtered by range and merged by NMS. TridentFast
(SimpleDet's ``*_fastapprox_*``) tests the middle branch alone: ``test_branch = 1``.
"""
from simpledet.config.faster_rcnn import FasterRcnnConfig
from simpledet.config.schema import (
    Check,
    ConfigError,
    Section,
    all_positive,
    field,
    fraction,
    positive,
)
from simpledet.detectors.tridentnet import TridentNet
from simpledet.models.backbone.resnet import RESNET_DEPTHS

__all__ = ["TridentConfig", "TridentNetConfig"]

_RANGES = Check(lambda v: len(v) > 0 and all(lo >= 0 and (hi < 0 or hi > lo) for lo, hi in v),
                "must hold one (lo, hi) per branch with 0 <= lo < hi (hi < 0: no upper bound)")


class TridentConfig(Section):
    """The trident branches (one entry per branch in ``dilations`` and ``valid_ranges``).

    Attributes:
        dilations: the dilation of each branch's 3x3 convs; branch k is row k of each image's
            block in the stacked batch.
        valid_ranges: (lo, hi) per branch: the objects a branch trains on (and, with
            test_scale_aware, detects), by sqrt of the "+1" box area in input pixels, both ends
            included; hi < 0 is no upper bound.
        trident_units: how many of res4's last units are trident units (1 .. units - 1); None:
            all but the first, SimpleDet's default.
        scale_aware: train each branch on its range only (anchors, gt and sampled RoIs);
            False trains every branch on every object.
        invalid_anchor_iou: a branch ignores anchors whose IoU with a gt outside its range
            exceeds this (SimpleDet's invalid_anchor_threshd).
        test_branch: None tests all branches and merges their detections by NMS; k tests
            branch k alone (TridentFast: 1, the middle branch).
        test_scale_aware: with all branches at test, drop each branch's RoIs outside its range
            (SimpleDet's test_scaleaware).
    """

    dilations: tuple[int, ...] = field((1, 2, 3), check=all_positive)
    valid_ranges: tuple[tuple[float, float], ...] = field(
        ((0.0, 90.0), (30.0, 160.0), (90.0, -1.0)), check=_RANGES)
    trident_units: int | None = field(None, check=positive)
    scale_aware: bool = True
    invalid_anchor_iou: float = field(0.3, check=fraction)
    test_branch: int | None = None
    test_scale_aware: bool = True

    @property
    def num_branches(self) -> int:
        """Branches in training: len(dilations)."""
        return len(self.dilations)

    def validate(self):
        if len(self.valid_ranges) != len(self.dilations):
            raise self.error("valid_ranges", f"has {len(self.valid_ranges)} entries but "
                             f"trident.dilations has {len(self.dilations)}: one per branch")
        if self.test_branch is not None and not 0 <= self.test_branch < len(self.dilations):
            raise self.error("test_branch", f"must be None or a branch 0.."
                             f"{len(self.dilations) - 1}, got {self.test_branch}")


class TridentNetConfig(FasterRcnnConfig):
    """A complete TridentNet experiment: Faster R-CNN's fields (C4 layout: neck 'none', box
    head 'c5') plus ``trident``."""

    detector_class = TridentNet
    precision_components = TridentNet.precision_components

    trident: TridentConfig

    def validate(self):
        if self.neck.type != "none":
            raise ConfigError(f"'neck.type' is {self.neck.type!r} but TridentNet runs on the C4 "
                              f"layout only", key="neck.type", suggestion="use 'none'")
        res4 = RESNET_DEPTHS[self.backbone.depth][2]
        units = self.trident.trident_units
        if units is not None and not 1 <= units <= res4 - 1:
            raise ConfigError(f"'trident.trident_units' is {units} but res4 of depth "
                              f"{self.backbone.depth} has {res4} units (the first strides): "
                              f"use 1..{res4 - 1}", key="trident.trident_units")
        super().validate()
