"""RoI feature extraction with ``simpledet.ops.fpn_roi_align`` (FPN levels or the single C4 map).

Each RoI is pooled from the level its size selects (FPN paper eq. 1, ``canonical_scale`` /
``canonical_level``); with one map (C4) that is plain ROIAlign. The features are pooled in
float32: a mixed-precision run casts them before this component.
"""
import mxnet as mx

from simpledet.ops import fpn_roi_align

__all__ = ["FpnRoiExtractor"]


class FpnRoiExtractor:
    """RoIAlign over the neck's roi features.

    Args:
        roi_cfg: ``cfg.roi_extractor`` (pooled_size, sampling_ratio, aligned, canonical_*).
        feature_strides: strides of the maps, ascending (``cfg.roi_feature_strides``).
        prefix: name prefix of the op.
    """

    def __init__(self, roi_cfg, feature_strides, prefix="roi_"):
        self.cfg = roi_cfg
        self.feature_strides = tuple(feature_strides)
        self.prefix = prefix

    def get_roi_feature(self, features, rois):
        """Pools every RoI.

        Args:
            features: list of (B, C, H_l, W_l) Symbols, one per stride, finest first.
            rois: (R, 5) [batch_idx, x1, y1, x2, y2] in input pixels.

        Returns:
            (R, C, pooled_size, pooled_size) Symbol.
        """
        cfg = self.cfg
        with mx.name.Prefix(self.prefix):
            return fpn_roi_align(rois, list(features), feature_strides=self.feature_strides,
                                 pooled_size=cfg.pooled_size, sampling_ratio=cfg.sampling_ratio,
                                 aligned=cfg.aligned, canonical_scale=cfg.canonical_scale,
                                 canonical_level=cfg.canonical_level, name="align")
