"""ResNet backbones: shapes of every variant/depth, parameter names, ResNeXt groups, stride
placement, and the normalizer switch (checked on the graph JSON)."""
import json
import math

import mxnet as mx
import pytest

from simpledet.config import FasterRcnnConfig
from simpledet.detectors import FasterRcnn
from simpledet.models.backbone import RESNET_DEPTHS, Normalizer, ResNet

BUCKET = (800, 1344)  # the loader's landscape bucket for 800 x 1333
VARIANT_DEPTHS = [(v, d) for v in ("v1", "v1b", "v2", "resnext") for d in sorted(RESNET_DEPTHS)
                  if not (v == "resnext" and d < 50)]


def feature_shapes(backbone, height, width, batch=1):
    features = backbone.get_features(mx.sym.var("data"))
    _, shapes, _ = mx.sym.Group(list(features.values())).infer_shape(
        data=(batch, 3, height, width))
    return dict(zip(features, shapes))


def graph_nodes(symbol):
    return {n["name"]: n for n in json.loads(symbol.tojson())["nodes"]}


def c5_symbol(backbone):
    return backbone.get_features(mx.sym.var("data"))["c5"]


@pytest.mark.parametrize("variant,depth", VARIANT_DEPTHS)
def test_every_variant_and_depth_gives_c2_to_c5(variant, depth):
    backbone = ResNet(variant, depth, Normalizer("fixbn"))
    shapes = feature_shapes(backbone, *BUCKET)
    base = 64 if depth in (18, 34) else 256
    assert shapes == {"c2": (1, base, 200, 336), "c3": (1, 2 * base, 100, 168),
                      "c4": (1, 4 * base, 50, 84), "c5": (1, 8 * base, 25, 42)}
    assert backbone.strides == {"c2": 4, "c3": 8, "c4": 16, "c5": 32}


def test_odd_input_sizes_round_up_like_the_loader():
    shapes = feature_shapes(ResNet("v1", 18, Normalizer("bn")), 801, 1333)
    for name, stride in (("c2", 4), ("c3", 8), ("c4", 16), ("c5", 32)):
        assert shapes[name][2:] == (math.ceil(801 / stride), math.ceil(1333 / stride))


def test_c4_layout_stops_at_c4():
    backbone = ResNet("v1", 50, Normalizer("fixbn"), last_stage=3)
    features = backbone.get_features(mx.sym.var("data"))
    assert sorted(features) == ["c2", "c3", "c4"]
    assert not any(n.startswith("stage4_") for n in features["c4"].list_arguments())


@pytest.mark.parametrize("variant", ["v1", "v1b", "resnext"])
def test_bottleneck_names_match_pretrained_files(variant):
    args = c5_symbol(ResNet(variant, 50, Normalizer("fixbn"))).list_arguments()
    aux = c5_symbol(ResNet(variant, 50, Normalizer("fixbn"))).list_auxiliary_states()
    for name in ("conv0_weight", "bn0_gamma", "bn0_beta", "stage1_unit1_conv1_weight",
                 "stage1_unit1_bn3_gamma", "stage1_unit1_sc_weight", "stage1_unit1_sc_bn_beta",
                 "stage3_unit6_conv3_weight", "stage4_unit3_bn3_gamma"):
        assert name in args
    assert "bn0_moving_mean" in aux and "stage4_unit3_bn3_moving_var" in aux
    assert "stage3_unit7_conv1_weight" not in args  # R50 has 6 units in res4
    assert "bn_data_gamma" not in args
    assert not any(a.endswith("_bias") for a in args)  # convs have no bias


def test_v2_names_match_mxnet_model_zoo():
    args = c5_symbol(ResNet("v2", 50, Normalizer("fixbn"))).list_arguments()
    assert args[:4] == ["data", "bn_data_gamma", "bn_data_beta", "conv0_weight"]
    for name in ("stage1_unit1_bn1_gamma", "stage1_unit1_conv1_weight", "stage1_unit1_sc_weight",
                 "stage4_unit3_conv3_weight"):
        assert name in args
    assert "stage1_unit1_sc_bn_gamma" not in args  # pre-activation shortcuts have no norm
    assert "stage1_unit2_sc_weight" not in args


def test_basic_units_for_depth_18():
    args = c5_symbol(ResNet("v1", 18, Normalizer("fixbn"))).list_arguments()
    assert "stage1_unit2_conv2_weight" in args and "stage1_unit1_conv3_weight" not in args
    assert "stage1_unit1_sc_weight" not in args  # 64 -> 64 at stride 1: identity shortcut
    assert "stage2_unit1_sc_weight" in args
    v2_args = c5_symbol(ResNet("v2", 18, Normalizer("fixbn"))).list_arguments()
    assert "stage1_unit1_sc_weight" in v2_args  # the MXNet model zoo always projects unit 1


def conv_attrs(nodes, name):
    return nodes[name]["attrs"]


@pytest.mark.parametrize("variant,strided,plain", [("v1", "conv1", "conv2"),
                                                    ("v1b", "conv2", "conv1"),
                                                    ("v2", "conv2", "conv1")])
def test_stride_placement(variant, strided, plain):
    nodes = graph_nodes(c5_symbol(ResNet(variant, 50, Normalizer("fixbn"))))
    assert conv_attrs(nodes, f"stage2_unit1_{strided}")["stride"] == "(2, 2)"
    assert conv_attrs(nodes, f"stage2_unit1_{plain}")["stride"] == "(1, 1)"
    assert conv_attrs(nodes, "stage2_unit1_sc")["stride"] == "(2, 2)"
    assert conv_attrs(nodes, "stage1_unit1_conv2")["stride"] == "(1, 1)"


@pytest.mark.parametrize("groups,width,stage1_width", [(32, 4, 128), (64, 4, 256), (32, 8, 256)])
def test_resnext_grouped_convs(groups, width, stage1_width):
    backbone = ResNet("resnext", 101, Normalizer("fixbn"), resnext_groups=groups,
                      resnext_group_width=width)
    symbol = c5_symbol(backbone)
    nodes = graph_nodes(symbol)
    for stage, units in zip((1, 2, 3, 4), (3, 4, 23, 3)):
        for unit in range(1, units + 1):
            attrs = conv_attrs(nodes, f"stage{stage}_unit{unit}_conv2")
            assert attrs["num_group"] == str(groups)
            assert attrs["num_filter"] == str(stage1_width * 2 ** (stage - 1))
        assert conv_attrs(nodes, f"stage{stage}_unit1_conv1").get("num_group", "1") == "1"
    assert conv_attrs(nodes, "stage2_unit1_conv2")["stride"] == "(2, 2)"  # v1b layout
    args, _, _ = symbol.infer_shape(data=(1, 3, 64, 64))
    shapes = dict(zip(symbol.list_arguments(), args))
    assert shapes["stage1_unit1_conv2_weight"] == (stage1_width, stage1_width // groups, 3, 3)


def test_resnext_rejects_basic_depths():
    with pytest.raises(ValueError, match="ResNeXt needs depth 50, 101 or 152"):
        ResNet("resnext", 18, Normalizer("fixbn"))


def test_bad_variant_and_depth_name_the_key():
    with pytest.raises(ValueError, match="backbone.variant"):
        ResNet("v3", 50)
    with pytest.raises(ValueError, match="backbone.depth"):
        ResNet("v1", 42)
    with pytest.raises(ValueError, match="backbone.normalizer"):
        Normalizer("layernorm")


def norm_ops(symbol):
    return [n for n in json.loads(symbol.tojson())["nodes"]
            if n["op"] in ("BatchNorm", "_contrib_SyncBatchNorm", "GroupNorm")]


def test_fixbn_uses_global_stats():
    ops = norm_ops(c5_symbol(ResNet("v1", 50, Normalizer("fixbn"))))
    assert len(ops) == 1 + 3 * 16 + 4  # stem + 3 per unit + 4 shortcut norms
    assert {n["op"] for n in ops} == {"BatchNorm"}
    assert all(n["attrs"]["use_global_stats"] == "True" for n in ops)
    assert all(n["attrs"]["fix_gamma"] == "False" for n in ops)


def test_bn_uses_batch_stats():
    ops = norm_ops(c5_symbol(ResNet("v1b", 50, Normalizer("bn"), frozen_stages=0)))
    assert {n["op"] for n in ops} == {"BatchNorm"}
    assert all(n["attrs"]["use_global_stats"] == "False" for n in ops)


def test_syncbn_has_one_key_per_layer_and_the_device_count():
    ops = norm_ops(c5_symbol(ResNet("v1", 50, Normalizer("syncbn", num_devices=4),
                                   frozen_stages=0)))
    assert {n["op"] for n in ops} == {"_contrib_SyncBatchNorm"}
    assert all(n["attrs"]["ndev"] == "4" for n in ops)
    keys = [n["attrs"]["key"] for n in ops]
    assert keys == [n["name"] for n in ops] and len(set(keys)) == len(keys)


def test_syncbn_device_count_comes_from_the_runtime_config():
    cfg = FasterRcnnConfig()
    cfg.backbone.normalizer = "syncbn"
    cfg.runtime.device_ids = (0, 1, 2)
    cfg.backbone.frozen_stages = 0  # frozen stages use stored statistics (plain BatchNorm)
    cfg.freeze()
    ops = norm_ops(c5_symbol(FasterRcnn(cfg).backbone))
    assert ops and all(n["attrs"]["ndev"] == "3" for n in ops)


def test_gn_has_32_groups_and_per_channel_affine():
    symbol = c5_symbol(ResNet("v1", 50, Normalizer("gn")))
    ops = norm_ops(symbol)
    assert {n["op"] for n in ops} == {"GroupNorm"} and len(ops) == 53
    assert all(n["attrs"]["num_groups"] == "32" for n in ops)
    args, _, aux = symbol.infer_shape(data=(1, 3, 64, 64))
    shapes = dict(zip(symbol.list_arguments(), args))
    assert shapes["bn0_gamma"] == (64,) and shapes["stage4_unit3_bn3_beta"] == (2048,)
    assert aux == []  # GroupNorm keeps no running statistics


def test_v2_bn_data_is_always_fixed():
    for kind in ("bn", "gn"):
        ops = {n["name"]: n for n in norm_ops(c5_symbol(ResNet("v2", 18, Normalizer(kind))))}
        assert ops["bn_data"]["op"] == "BatchNorm"
        assert ops["bn_data"]["attrs"]["use_global_stats"] == "True"
        assert ops["bn_data"]["attrs"]["fix_gamma"] == "True"


def test_res5_head_keeps_backbone_names():
    backbone = ResNet("v2", 50, Normalizer("fixbn"), last_stage=3)
    out = backbone.res5(mx.sym.var("roi_feat"), stride=1)
    args = out.list_arguments()
    assert "stage4_unit1_conv1_weight" in args and "bn1_gamma" in args
    _, shapes, _ = out.infer_shape(roi_feat=(5, 1024, 7, 7))
    assert shapes == [(5, 2048, 7, 7)]
