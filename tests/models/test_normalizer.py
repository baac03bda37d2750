"""One normalizer for every component (simpledet.models.layers.normalizer): GroupNorm in the FPN
neck, the 4conv1fc box head and the mask head (detectron2's GN configs), RetinaNet's head on the
same function; parameter names, GN ops actually in the graphs, numerics, config validation."""
import json
import warnings

import mxnet as mx
import numpy as np
import pytest

from simpledet.config import FasterRcnnConfig
from simpledet.config.mask_rcnn import MaskHeadConfig, MaskRcnnConfig
from simpledet.config.schema import ConfigError
from simpledet.models import ConvFcHead, FpnNeck, build_bbox_head, build_neck
from simpledet.models.backbone import normalizer as backbone_normalizer
from simpledet.models.dense_heads import retina_head
from simpledet.models.layers import Normalizer, group_norm, normalizer
from simpledet.models.mask_head import ConvMaskHead


def ops(symbol, op=None):
    nodes = [n for n in json.loads(symbol.tojson())["nodes"] if n["op"] != "null"]
    return [n for n in nodes if op is None or n["op"] == op]


def bind_forward(symbol, inputs, seed=0):
    """Forward with random parameters (gamma 1, beta 0) and the given inputs."""
    rng = np.random.default_rng(seed)
    shapes, _, _ = symbol.infer_shape(**{k: v.shape for k, v in inputs.items()})
    args = {}
    for name, shape in zip(symbol.list_arguments(), shapes):
        if name in inputs:
            args[name] = mx.nd.array(inputs[name])
        elif name.endswith("_gamma"):
            args[name] = mx.nd.ones(shape)
        elif name.endswith("_beta"):
            args[name] = mx.nd.zeros(shape)
        else:
            args[name] = mx.nd.array(rng.normal(size=shape) * 0.1)
    return [o.asnumpy() for o in symbol.bind(mx.cpu(), args).forward()]


def test_every_component_shares_one_normalizer_module():
    assert backbone_normalizer.Normalizer is Normalizer  # the old import path still works
    assert retina_head.group_norm is normalizer.group_norm
    assert "none" in normalizer.NORMALIZER_KINDS
    x = mx.sym.var("x")
    assert Normalizer("none", key="neck.normalizer")(x, "n", 4) is x
    with pytest.raises(ValueError, match="neck.normalizer must be one of"):
        Normalizer("ln", key="neck.normalizer")
    shared = Normalizer("bn")(x, "n", 4, gamma=mx.sym.var("g"), op_name="n_branch2")
    assert "g" in shared.list_arguments() and "n_gamma" not in shared.list_arguments()
    assert [n["name"] for n in ops(shared, "BatchNorm")] == ["n_branch2"]
    with pytest.raises(ValueError, match="not divisible by 32 groups"):
        group_norm(x, "odd", 48)


def fpn_features():
    return {f"c{lvl}": mx.sym.var(f"c{lvl}") for lvl in (2, 3, 4, 5)}


def fpn_inputs(channels=8):
    rng = np.random.default_rng(1)
    sizes = {"c2": (16, 24), "c3": (8, 12), "c4": (4, 6), "c5": (2, 3)}
    return {k: rng.normal(size=(2, channels, h, w)) * 5 + 3 for k, (h, w) in sizes.items()}


def test_fpn_with_gn_normalizes_every_lateral_and_output_conv():
    neck = FpnNeck(64, crop=False, normalizer=Normalizer("gn", key="neck.normalizer"))
    outputs = neck.get_features(fpn_features())
    symbol = mx.sym.Group(list(outputs.values()))
    gn = [n["name"] for n in ops(symbol, "GroupNorm")]
    assert sorted(gn) == sorted(f"fpn_p{lvl}_{layer}_norm" for lvl in (2, 3, 4, 5)
                                for layer in ("lateral", "conv"))
    assert all(n["attrs"]["num_groups"] == "32" for n in ops(symbol, "GroupNorm"))
    args = symbol.list_arguments()
    for lvl in (2, 3, 4, 5):
        for layer in ("lateral", "conv"):
            assert f"fpn_p{lvl}_{layer}_weight" in args
            assert f"fpn_p{lvl}_{layer}_bias" not in args  # the norm's beta replaces it
            assert {f"fpn_p{lvl}_{layer}_norm_gamma", f"fpn_p{lvl}_{layer}_norm_beta"} <= set(
                args)
    convs = ops(symbol, "Convolution")
    assert all(c["attrs"]["no_bias"] == "True" for c in convs)
    # p2..p5 end in the GN (gamma 1, beta 0): each group of 2 channels has mean 0, var 1
    values = bind_forward(symbol, fpn_inputs())
    for out in values[:4]:
        groups = out.reshape(2, 32, -1)
        np.testing.assert_allclose(groups.mean(-1), 0, atol=1e-4)
        np.testing.assert_allclose(groups.var(-1), 1, atol=1e-2)


def test_fpn_with_batchnorm_names_layers_once_with_the_prefix():
    neck = FpnNeck(32, crop=False, normalizer=Normalizer("bn", key="neck.normalizer"))
    symbol = mx.sym.Group(list(neck.get_features(fpn_features()).values()))
    assert "fpn_p2_conv_norm_gamma" in symbol.list_arguments()
    assert "fpn_p2_conv_norm_moving_mean" in symbol.list_auxiliary_states()
    assert not any(n.startswith("fpn_fpn") for n in symbol.list_arguments())


def test_fpn_default_is_unchanged_plain_convs_with_bias():
    symbol = mx.sym.Group(list(FpnNeck(32, crop=False).get_features(fpn_features()).values()))
    assert not ops(symbol, "GroupNorm") and not ops(symbol, "BatchNorm")
    assert "fpn_p3_lateral_bias" in symbol.list_arguments()


def box_cfg(normalizer="gn", head_type="4conv1fc"):
    cfg = FasterRcnnConfig()
    cfg.dataset.class_names = ("a", "b", "c")
    cfg.bbox_head.type = head_type
    cfg.bbox_head.normalizer = normalizer
    cfg.bbox_head.conv_channels = 64
    cfg.bbox_head.fc_dim = 32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg.freeze()
    return cfg


def test_4conv1fc_head_shapes_names_and_gn_ops():
    cfg = box_cfg()
    head = build_bbox_head(cfg.bbox_head, cfg.num_classes, cfg.test)
    assert isinstance(head, ConvFcHead)
    cls_logit, bbox_delta = head.get_output(mx.sym.var("roi_feat"))
    group = mx.sym.Group([cls_logit, bbox_delta])
    args, shapes, _ = group.infer_shape(roi_feat=(10, 48, 7, 7))
    assert shapes == [(10, 4), (10, 16)]
    assert group.list_arguments() == ["roi_feat"] + [
        f"bbox_conv{i}_{kind}" for i in range(1, 5)
        for kind in ("weight", "norm_gamma", "norm_beta")] + [
        f"bbox_{layer}_{kind}" for layer in ("fc1", "cls_logit", "reg_delta")
        for kind in ("weight", "bias")]
    shape = dict(zip(group.list_arguments(), args))
    assert shape["bbox_conv1_weight"] == (64, 48, 3, 3)
    assert shape["bbox_conv4_norm_gamma"] == (64,) and shape["bbox_fc1_weight"] == (32, 64 * 49)
    assert [n["name"] for n in ops(group, "GroupNorm")] == [
        f"bbox_conv{i}_norm" for i in range(1, 5)]
    assert [n["op"] for n in ops(group) if n["name"].startswith("bbox_conv1")][:2] == [
        "Convolution", "_ones"]  # conv, then the GN's constant unit affine
    out = bind_forward(group, {"roi_feat": np.random.default_rng(0).normal(size=(10, 48, 7, 7))})
    assert all(np.isfinite(o).all() for o in out)


def test_4conv1fc_without_norm_has_conv_biases_and_no_gn():
    cfg = box_cfg("none")
    head = build_bbox_head(cfg.bbox_head, cfg.num_classes, cfg.test)
    cls_logit, _ = head.get_output(mx.sym.var("roi_feat"))
    assert "bbox_conv1_bias" in cls_logit.list_arguments() and not ops(cls_logit, "GroupNorm")


def test_4conv1fc_shares_parameters_across_runs_and_takes_cascade_suffixes():
    cfg = box_cfg()
    head = ConvFcHead(cfg.bbox_head, cfg.num_classes, cfg.test, suffix="_2nd")
    first, _ = head.get_output(mx.sym.var("a"))
    second, _ = head.get_output(mx.sym.var("b"), tag="_again")
    group = mx.sym.Group([first, second])
    params = [n for n in group.list_arguments() if n not in ("a", "b")]
    # one set used twice: 4 x (conv, gamma, beta), fc1, cls_logit
    assert len(params) == len(set(params)) == 4 * 3 + 4
    assert {"bbox_conv1_2nd_weight", "bbox_conv1_norm_2nd_gamma"} <= set(params)
    names = [n["name"] for n in ops(group)]
    assert len(names) == len(set(names))


def mask_cfg(normalizer):
    cfg = MaskHeadConfig()
    cfg.conv_channels = 32
    cfg.normalizer = normalizer
    return cfg.freeze()


def test_mask_head_with_gn():
    head = ConvMaskHead(mask_cfg("gn"), num_classes=3, mask_size=28)
    logit = head.get_output(mx.sym.var("roi_feat"))
    args = logit.list_arguments()
    assert args == ["roi_feat"] + [f"mask_conv{i}_{kind}" for i in range(1, 5)
                                   for kind in ("weight", "norm_gamma", "norm_beta")] + [
        "mask_deconv_weight", "mask_deconv_bias", "mask_logit_weight", "mask_logit_bias"]
    assert [n["name"] for n in ops(logit, "GroupNorm")] == [
        f"mask_conv{i}_norm" for i in range(1, 5)]
    _, shapes, _ = logit.infer_shape(roi_feat=(6, 16, 14, 14))
    assert shapes == [(6, 3, 28, 28)]
    plain = ConvMaskHead(mask_cfg("none"), num_classes=3, mask_size=28)
    plain_logit = plain.get_output(mx.sym.var("roi_feat"))
    assert "mask_conv1_bias" in plain_logit.list_arguments()
    assert not ops(plain_logit, "GroupNorm")


@pytest.mark.parametrize("section,key,value,message", [
    ("neck", "normalizer", "gn", None),  # with neck.type 'none' (set below)
    ("bbox_head", "normalizer", "gn", "only applies to type '4conv1fc'"),
])
def test_normalizers_only_where_they_apply(section, key, value, message):
    cfg = FasterRcnnConfig(pretrain=None)
    if section == "neck":
        cfg.neck.type, cfg.bbox_head.type = "none", "c5"
        message = "only applies to type 'fpn'"
    setattr(getattr(cfg, section), key, value)
    with warnings.catch_warnings(), pytest.raises(ConfigError, match=message) as err:
        warnings.simplefilter("ignore")
        cfg.freeze()
    assert f"{section}.{key}" in str(err.value)


@pytest.mark.parametrize("section,field", [("neck", "channels"),
                                           ("bbox_head", "conv_channels")])
def test_gn_channels_must_divide_into_32_groups(section, field):
    cfg = FasterRcnnConfig(pretrain=None)
    cfg.neck.normalizer = "gn"
    cfg.bbox_head.type, cfg.bbox_head.normalizer = "4conv1fc", "gn"
    setattr(getattr(cfg, section), field, 48)
    with warnings.catch_warnings(), pytest.raises(ConfigError) as err:
        warnings.simplefilter("ignore")
        cfg.freeze()
    assert f"{section}.{field}" in str(err.value) and "32 groups" in str(err.value)
    mask = MaskRcnnConfig(pretrain=None)
    mask.mask_head.normalizer, mask.mask_head.conv_channels = "gn", 48
    with warnings.catch_warnings(), pytest.raises(ConfigError, match="mask_head.conv_channels"):
        warnings.simplefilter("ignore")
        mask.freeze()


def test_gn_train_symbol_of_the_fpn_layout_infers_shapes():
    cfg = FasterRcnnConfig(pretrain=None)
    cfg.dataset.class_names = ("a", "b")
    cfg.backbone.depth, cfg.backbone.normalizer, cfg.backbone.width = 18, "gn", 32
    cfg.neck.normalizer, cfg.neck.channels = "gn", 64
    cfg.bbox_head.type, cfg.bbox_head.normalizer = "4conv1fc", "gn"
    cfg.bbox_head.conv_channels, cfg.bbox_head.fc_dim = 64, 64
    cfg.freeze()
    from simpledet.engine.build import build_detector

    model = build_detector(cfg)
    assert isinstance(build_neck(cfg.neck), FpnNeck)
    symbol = model.get_train_symbol()
    shapes = model.train_data_shapes(2, 128, 160)
    _, out, aux = symbol.infer_shape(**shapes)
    assert out == [(1,)] * 4 and aux == []  # GN everywhere: no BatchNorm statistics left
    gn = {n["name"].split("_")[0] for n in ops(symbol, "GroupNorm")}
    assert {"bn0", "stage1", "fpn", "bbox"} <= gn
