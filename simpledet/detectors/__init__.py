"""Detectors: wire the model builders into train and test symbols."""
from simpledet.detectors.faster_rcnn import FasterRcnn

__all__ = ["FasterRcnn"]
