"""Detectors: wire the model builders into train and test symbols, on the contract of base.py."""
from simpledet.detectors.base import Detector, default_initializer
from simpledet.detectors.faster_rcnn import FasterRcnn

__all__ = ["Detector", "FasterRcnn", "default_initializer"]
