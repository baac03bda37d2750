"""The Mask R-CNN config schema: Faster R-CNN's sections (simpledet.config.faster_rcnn) plus the
mask branch: its RoIAlign, its head and its loader input (the gt polygons).

Defaults are SimpleDet's ``mask_r50v1_fpn_1x``: RoIAlign 14x14 on P2-P5 for the mask branch,
four 3x3 convs of 256 channels, a 2x deconv to 28x28, one sigmoid mask per class, the mask
loss on the foreground RoIs only. Mask R-CNN runs on the FPN layout only (config/_base/mask_fpn.py).
"""
from typing import Literal

from simpledet.config.faster_rcnn import FasterRcnnConfig, RoiExtractorConfig
from simpledet.config.schema import ConfigError, Section, field, positive
from simpledet.detectors.mask_rcnn import MaskRcnn

__all__ = ["MaskHeadConfig", "MaskRcnnConfig", "MaskTargetConfig"]


class MaskHeadConfig(Section):
    """The mask head: convs -> 2x deconv -> one mask logit map per class.

    Attributes:
        num_convs: 3x3 conv + ReLU layers on the pooled RoI features.
        conv_channels: their channels (and the deconv's).
        loss_weight: multiplies the mask loss (mean binary cross-entropy over the foreground
            RoIs' mask pixels).
        normalizer: normalization between each conv and its ReLU: 'none' (convs with bias,
            SimpleDet's head) or 'gn' (GroupNorm, 32 groups, convs without bias: detectron2's
            GN configs).
    """

    num_convs: int = field(4, check=positive)
    conv_channels: int = field(256, check=positive)
    loss_weight: float = field(1.0, check=positive)
    normalizer: Literal["none", "gn"] = "none"

    def validate(self):
        if self.normalizer == "gn" and self.conv_channels % 32:
            raise self.error("conv_channels", f"({self.conv_channels}) must be divisible by "
                             f"GroupNorm's 32 groups (mask_head.normalizer 'gn')")


class MaskTargetConfig(Section):
    """The gt polygons the loader hands the graph (input ``gt_polys``, see
    simpledet.core.masks for the padded layout).

    Attributes:
        poly_len: floats per gt row of ``gt_polys``; a gt whose polygons need more is thinned
            (every k-th vertex) to fit (simpledet.core.masks.encode_polygons). COCO's
            largest polygons have ~1,400 vertices: 2,048 keeps ~99.9 % of COCO objects exact.
    """

    poly_len: int = field(2048, check=positive)

    def validate(self):
        if self.poly_len < 8:  # P, n, and three points
            raise self.error("poly_len", f"must hold one triangle (>= 8 floats), got "
                             f"{self.poly_len}")


class MaskRcnnConfig(FasterRcnnConfig):
    """A complete Mask R-CNN experiment: Faster R-CNN's fields plus ``mask_roi_extractor``
    (RoIAlign of the mask branch, 14x14 by default), ``mask_head`` and ``mask_target``."""

    detector_class = MaskRcnn
    precision_components = MaskRcnn.precision_components

    mask_roi_extractor: RoiExtractorConfig = RoiExtractorConfig(pooled_size=14)
    mask_head: MaskHeadConfig
    mask_target: MaskTargetConfig

    @property
    def mask_size(self) -> int:
        """Side of the predicted masks and of their targets: twice the mask RoIAlign output
        (the head's deconv doubles it): 28 for 14x14 RoIs."""
        return 2 * self.mask_roi_extractor.pooled_size

    @property
    def mask_rois_per_image(self) -> int:
        """Sampled RoIs per image the mask branch trains on: the foreground quota
        round(fg_fraction * batch_per_image) (half to even, as the sampler), since the sampler
        puts every foreground RoI first (simpledet.ops.proposal_target)."""
        sampler = self.roi_sampler
        return max(1, round(sampler.fg_fraction * sampler.batch_per_image))

    def validate(self):
        if self.neck.type != "fpn":
            raise ConfigError(f"'neck.type' is {self.neck.type!r} but Mask R-CNN runs on the "
                              f"FPN layout only", key="neck.type", suggestion="use 'fpn'")
        super().validate()
