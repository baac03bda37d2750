"""The C5-reduce layout (neck.type 'c5_reduce', SimpleDet's *_c5_red): a dilated res5 keeps c5
at stride 16 with the classifier's parameter names, the reduce neck's maps and names, the
layout's derived strides, and the config errors for combinations it does not support."""
import json
import math
import warnings

import mxnet as mx
import pytest

from simpledet.config import (
    CascadeRcnnConfig,
    ConfigError,
    FasterRcnnConfig,
    MaskRcnnConfig,
    TridentNetConfig,
)
from simpledet.config.faster_rcnn import LAYOUTS
from simpledet.detectors import FasterRcnn
from simpledet.models import C5ReduceNeck, build_neck
from simpledet.models.backbone import Normalizer, ResNet


def shapes_of(features, height, width):
    _, shapes, _ = mx.sym.Group(list(features.values())).infer_shape(data=(1, 3, height, width))
    return dict(zip(features, shapes))


def nodes(symbol):
    return {n["name"]: n for n in json.loads(symbol.tojson())["nodes"]}


# --- the backbone ---------------------------------------------------------------------------

@pytest.mark.parametrize("height,width", [(800, 1344), (801, 1333)])
@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_dilated_res5_keeps_c5_at_stride_16(variant, height, width):
    backbone = ResNet(variant, 50, Normalizer("fixbn"), res5_dilation=2)
    shapes = shapes_of(backbone.get_features(mx.sym.var("data")), height, width)
    at16 = (math.ceil(height / 16), math.ceil(width / 16))
    assert shapes["c4"] == (1, 1024) + at16
    assert shapes["c5"] == (1, 2048) + at16  # not (ceil(h / 32), ceil(w / 32))
    assert backbone.strides == {"c2": 4, "c3": 8, "c4": 16, "c5": 16}


def test_dilated_res5_is_stride_1_dilation_2_with_the_classifier_names():
    plain = ResNet("v2", 50, Normalizer("fixbn")).get_features(mx.sym.var("data"))["c5"]
    dilated = ResNet("v2", 50, Normalizer("fixbn"), res5_dilation=2).get_features(
        mx.sym.var("data"))["c5"]
    graph = nodes(dilated)
    for unit in (1, 2, 3):
        attrs = graph[f"stage4_unit{unit}_conv2"]["attrs"]
        assert (attrs["stride"], attrs["dilate"], attrs["pad"]) == ("(1, 1)", "(2, 2)", "(2, 2)")
    assert graph["stage4_unit1_sc"]["attrs"]["stride"] == "(1, 1)"
    assert graph["stage3_unit1_conv2"]["attrs"]["dilate"] == "(1, 1)"  # only res5 dilates
    # the same parameters (a classifier file loads), plus v2's final norm, which ends c5 as the
    # C5 box head's res5 and SimpleDet's c4c5 backbone end it
    extra = set(dilated.list_arguments()) - set(plain.list_arguments())
    assert extra == {"bn1_gamma", "bn1_beta"} and set(plain.list_arguments()) <= set(
        dilated.list_arguments())
    assert dilated.name.startswith("relu1")
    v1 = ResNet("v1", 50, Normalizer("fixbn"), res5_dilation=2).get_features(mx.sym.var("data"))
    assert set(v1["c5"].list_arguments()) == set(ResNet("v1", 50).get_features(
        mx.sym.var("data"))["c5"].list_arguments())


def test_dilated_res5_with_dcn_dilates_the_deformable_convs():
    backbone = ResNet("v1b", 18, Normalizer("bn"), res5_dilation=2, dcn_stages=(5,))
    features = backbone.get_features(mx.sym.var("data"))
    assert shapes_of(features, 128, 160)["c5"] == (1, 512, 8, 10)
    deformable = [n for n in nodes(features["c5"]).values()
                  if n["op"].endswith("DeformableConvolution")]
    assert deformable and all(n["attrs"]["dilate"] == "(2, 2)" for n in deformable)


def test_res5_dilation_rejects_bad_values():
    with pytest.raises(ValueError, match="res5_dilation must be 1 or 2"):
        ResNet("v1", 50, res5_dilation=4)
    with pytest.raises(ValueError, match="needs res5 in the backbone"):
        ResNet("v1", 50, last_stage=3, res5_dilation=2)


# --- the neck -------------------------------------------------------------------------------

def test_reduce_neck_passes_c4_and_reduces_c5():
    cfg = FasterRcnnConfig()
    cfg.neck.type = "c5_reduce"
    cfg.neck.channels = 96
    neck = build_neck(cfg.neck.freeze())
    assert isinstance(neck, C5ReduceNeck) and neck.channels == 96
    backbone = ResNet("v1", 18, Normalizer("bn"), res5_dilation=2)
    features = backbone.get_features(mx.sym.var("data"))
    out = neck.get_features(features)
    assert out["c4"] is features["c4"]  # the RPN reads c4 as it is
    shapes = shapes_of(out, 130, 200)
    assert shapes == {"c4": (1, 256, 9, 13), "c5_reduced": (1, 96, 9, 13)}
    assert neck.rpn_feature_names == ("c4",) and neck.roi_feature_names == ("c5_reduced",)
    assert {neck.strides[n] for n in neck.rpn_feature_names + neck.roi_feature_names} == {16}
    names = [n for n in out["c5_reduced"].list_arguments() if n.startswith("c5_reduce_")]
    assert names == ["c5_reduce_conv_weight", "c5_reduce_conv_bias"]
    assert out["c5_reduced"].name == "c5_reduce_relu"  # a ReLU after the 1x1 conv
    with pytest.raises(ValueError, match="missing \\['c5'\\]"):
        neck.get_features({"c4": features["c4"]})


# --- the layout in the config and the detector ----------------------------------------------

def tiny_faster(**changes):
    cfg = FasterRcnnConfig()
    cfg.pretrain = None
    cfg.neck.type = "c5_reduce"
    cfg.neck.channels = 32
    cfg.backbone.depth = 18
    cfg.backbone.width = 16
    cfg.backbone.normalizer = "bn"
    cfg.dataset.class_names = ("a", "b")
    for key, value in changes.items():
        cfg.set(key, value)
    return cfg.freeze()


def test_layout_derives_stride_16_maps_and_the_2mlp_head():
    layout = LAYOUTS["c5_reduce"]
    assert (layout.backbone_last_stage, layout.res5_dilation) == (4, 2)
    assert (layout.bbox_head, layout.other_bbox_heads) == ("2mlp", ())
    cfg = tiny_faster()
    assert cfg.rpn_feature_strides == (16,) and cfg.roi_feature_strides == (16,)
    assert cfg.bbox_head.type == "2mlp"
    model = FasterRcnn(cfg)
    assert model.backbone.strides["c5"] == 16
    assert model.rpn_levels(128, 160) == [(16, 8, 10)]
    _, roi_features = model._features(mx.sym.var("data"))
    _, shapes, _ = roi_features[0].infer_shape(data=(2, 3, 128, 160))
    assert shapes == [(2, 32, 8, 10)]  # the reduced c5: input / 16, neck.channels


@pytest.mark.parametrize("family,key,value,match", [
    (FasterRcnnConfig, "bbox_head.type", "c5", "needs '2mlp'"),
    (FasterRcnnConfig, "neck.normalizer", "gn", "only applies to type 'fpn'"),
    (CascadeRcnnConfig, "neck.type", "none", "FPN or C5-reduce layout only"),
    (MaskRcnnConfig, "neck.type", "c5_reduce", "FPN layout only"),
    (TridentNetConfig, "neck.type", "c5_reduce", "C4 layout only"),
])
def test_unsupported_combinations_name_the_key_in_one_line(family, key, value, match):
    cfg = family()
    cfg.pretrain = None
    cfg.neck.type = "c5_reduce"
    if family is CascadeRcnnConfig:
        cfg.bbox_head.class_agnostic = True
    cfg.set(key, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ConfigError, match=match) as error:
            cfg.freeze()
    assert error.value.key == key and f"'{key}'" in str(error.value)
    assert "\n" not in str(error.value)


def test_cascade_accepts_the_layout():
    cfg = CascadeRcnnConfig()
    cfg.pretrain = None
    cfg.backbone.normalizer = "bn"
    cfg.neck.type = "c5_reduce"
    cfg.bbox_head.class_agnostic = True
    cfg.freeze()
    assert cfg.roi_feature_strides == (16,)
