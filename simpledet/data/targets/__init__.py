"""Per-image training targets the loader builds: picklable assigners that declare their outputs.

A detector family lists the assigners it needs (``Detector.target_assigners``); the loader and
the batch layout (simpledet.data.layout) ask them for their arrays and never name a target.
"""
from simpledet.data.targets.base import ImageSample, TargetAssigner
from simpledet.data.targets.crowd import CrowdRegionAssigner
from simpledet.data.targets.polygons import GtPolygonAssigner
from simpledet.data.targets.retina import RetinaAnchorAssigner
from simpledet.data.targets.rpn import RpnAnchorAssigner, levels_table
from simpledet.data.targets.trident import TridentAnchorAssigner, in_valid_range

__all__ = ["CrowdRegionAssigner", "GtPolygonAssigner", "ImageSample", "RetinaAnchorAssigner",
           "RpnAnchorAssigner", "TargetAssigner", "TridentAnchorAssigner", "in_valid_range",
           "levels_table"]
