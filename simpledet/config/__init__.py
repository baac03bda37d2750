"""Typed, validated experiment configs: the schema mechanism, the settings every family shares
(``common.DetectorConfig``), the family schemas (Faster R-CNN, Mask R-CNN, Cascade R-CNN,
RetinaNet, TridentNet, RPN-only), and loading / overriding / dumping / diffing config files. See
DESIGN.md and ``config/``.
"""
from simpledet.config.cascade_rcnn import CascadeRcnnConfig
from simpledet.config.common import COCO_CLASS_NAMES, DetectorConfig
from simpledet.config.faster_rcnn import FasterRcnnConfig
from simpledet.config.loader import (
    add_config_arguments,
    apply_overrides,
    config_to_json,
    config_to_python,
    diff_configs,
    dump_config,
    exit_on_config_error,
    format_diff,
    load_config,
    parse_override,
)
from simpledet.config.mask_rcnn import MaskRcnnConfig
from simpledet.config.retinanet import RetinaNetConfig
from simpledet.config.rpn import RpnConfig
from simpledet.config.schema import ConfigError, ConfigKeyError, Section, field
from simpledet.config.tridentnet import TridentNetConfig

__all__ = [
    "COCO_CLASS_NAMES", "CascadeRcnnConfig", "ConfigError", "ConfigKeyError", "DetectorConfig",
    "FasterRcnnConfig", "MaskRcnnConfig", "RetinaNetConfig", "RpnConfig", "Section",
    "TridentNetConfig",
    "add_config_arguments", "apply_overrides", "config_to_json", "config_to_python",
    "diff_configs", "dump_config", "exit_on_config_error", "field", "format_diff",
    "load_config", "parse_override",
]
