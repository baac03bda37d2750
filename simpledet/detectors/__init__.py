"""Detectors: wire the model builders into train and test symbols, on the contract of base.py."""
from simpledet.detectors.base import Detector, default_initializer
from simpledet.detectors.cascade_rcnn import CascadeRcnn
from simpledet.detectors.faster_rcnn import FasterRcnn
from simpledet.detectors.mask_rcnn import MaskRcnn
from simpledet.detectors.retinanet import RetinaNet
from simpledet.detectors.rpn import RpnDetector

__all__ = ["CascadeRcnn", "Detector", "FasterRcnn", "MaskRcnn", "RetinaNet", "RpnDetector",
           "default_initializer"]
