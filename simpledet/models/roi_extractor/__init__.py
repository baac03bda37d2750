"""RoI feature extractors: (features, rois) -> per-RoI feature maps."""
from simpledet.models.roi_extractor.fpn_roi_extractor import FpnRoiExtractor

__all__ = ["FpnRoiExtractor"]
