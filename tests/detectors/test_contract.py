"""The detector contract (simpledet/detectors/base.py) and the config split it rests on: the
config class names its detector, the family declares its precision components, one initializer,
one batch layout, the FPN/C4 layout decided in one table."""
import typing
import warnings
from pathlib import Path

import numpy as np
import pytest

from simpledet.benchmark import synthetic
from simpledet.config import ConfigError, FasterRcnnConfig, load_config
from simpledet.config.common import DetectorConfig
from simpledet.config.faster_rcnn import LAYOUTS, NeckConfig
from simpledet.data.layout import batch_layout, graph_inputs
from simpledet.detectors import Detector, FasterRcnn, default_initializer
from simpledet.engine import trainer
from simpledet.engine.build import build_detector

REPO = Path(__file__).resolve().parents[2]
SHAPES_FPN = str(REPO / "config" / "shapes" / "faster_fpn.py")


class TinyDetector(Detector):
    precision_components = ("backbone",)


class TinyConfig(DetectorConfig):
    """A family with no model sections: what a new family starts from."""

    detector_class = TinyDetector
    precision_components = TinyDetector.precision_components


def test_build_detector_dispatches_on_the_config_class():
    cfg = TinyConfig(pretrain=None).freeze()
    detector = build_detector(cfg)
    assert type(detector) is TinyDetector and detector.cfg is cfg
    assert type(build_detector(load_config(SHAPES_FPN))) is FasterRcnn
    with pytest.raises(TypeError, match="names no detector_class"):
        build_detector(DetectorConfig(pretrain=None).freeze())


def test_generic_sections_live_in_the_common_base():
    tiny = TinyConfig(pretrain=None)
    assert {"dataset", "input", "runtime", "train", "test", "mixed_precision"} <= set(
        tiny.field_names())
    assert not {"rpn", "roi_sampler", "bbox_head", "backbone", "neck"} & set(tiny.field_names())
    faster = FasterRcnnConfig()
    assert set(tiny.field_names()) < set(faster.field_names())
    # the run-level derived values are the base's, the strides Faster's
    assert {"lr", "max_iter", "lr_steps", "total_batch", "num_classes"} <= set(
        tiny.derived_names())
    assert "rpn_feature_strides" not in tiny.derived_names()


def test_precision_components_are_declared_by_the_family():
    assert FasterRcnnConfig.precision_components == FasterRcnn.precision_components
    assert FasterRcnnConfig().mixed_precision.components == FasterRcnn.precision_components
    assert TinyConfig().mixed_precision.components == ("backbone",)
    cfg = TinyConfig(pretrain=None)
    cfg.mixed_precision.components = ("backbone", "rpn_head")
    with pytest.raises(ConfigError, match=r"'mixed_precision.components' has \['rpn_head'\]"):
        cfg.freeze()
    with pytest.raises(ConfigError, match="choose from 'backbone', 'neck'"):
        load_config(SHAPES_FPN, ["mixed_precision.components=('backbone', 'mask_head')"])


def test_one_initializer():
    cfg = load_config(SHAPES_FPN)
    inits = [default_initializer(), trainer.default_initializer(), FasterRcnn(cfg).initializer(),
             TinyDetector(cfg).initializer()]
    assert len({init.dumps() for init in inits}) == 1
    assert '"factor_type": "out"' in inits[0].dumps()


def test_one_batch_layout():
    cfg = load_config(SHAPES_FPN, ["input.short=64", "input.long=96"])
    detector = FasterRcnn(cfg)
    bucket = (64, 96)
    shapes = detector.train_data_shapes(2, *bucket)
    assert tuple(shapes) == detector.train_data_names
    assigners = detector.target_assigners([bucket])
    assert detector.train_data_names == graph_inputs(assigners)
    layout = batch_layout(2, *bucket, cfg.input.max_num_gt, assigners)
    assert shapes == {name: layout[name][0] for name in detector.train_data_names}
    assert layout["rpn_label"] == ((2, detector.target_assigners()[0].num_anchors(*bucket)),
                                   np.float32)
    sample = synthetic.make_images(2, 64, 96, cfg.num_classes)
    batch = synthetic.training_batch(cfg, assigners, sample, bucket)
    assert {name: array.shape for name, array in batch.items()} == shapes
    assert all(batch[name].dtype == layout[name][1] for name in batch)
    assert detector.test_data_shapes(1, *bucket) == {"data": (1, 3, 64, 96), "im_info": (1, 3)}


def test_a_family_without_loader_targets():
    cfg = TinyConfig(pretrain=None).freeze()
    detector = TinyDetector(cfg)
    assert detector.target_assigners() == [] and graph_inputs(()) == detector.train_data_names
    assert detector.train_data_shapes(2, 64, 96) == {
        "data": (2, 3, 64, 96), "im_info": (2, 3), "gt_boxes": (2, cfg.input.max_num_gt, 5)}


def test_fpn_and_c4_layouts_are_one_table():
    assert set(LAYOUTS) == set(typing.get_args(typing.get_type_hints(NeckConfig)["type"]))
    for neck_type, layout in LAYOUTS.items():
        cfg = FasterRcnnConfig(pretrain=None)
        cfg.neck.type, cfg.bbox_head.type = neck_type, layout.bbox_head
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fixbn without pretrained weights
            cfg.freeze()
        assert cfg.layout() is layout
        detector = FasterRcnn(cfg)  # checks the neck's strides against the layout's
        stages = {"c4": 3, "c5": 4}
        assert stages[max(detector.backbone.strides)] == layout.backbone_last_stage


def test_base_decodes_dets_into_original_pixels():
    dets = np.array([[[10, 20, 29, 39, 0.9, 2], [-1, -1, -1, -1, -1, -1]]], np.float32)
    im_info = np.array([[100, 150, 2.0]], np.float32)
    (result,) = TinyDetector(None).decode_test_outputs(dets, im_info, [(50, 75)])
    np.testing.assert_allclose(result["boxes"], [[5, 10, 14, 19]])
    assert result["classes"].tolist() == [2] and result["scores"].tolist() == [pytest.approx(0.9)]
    assert TinyDetector.eval_types == ("bbox",)
