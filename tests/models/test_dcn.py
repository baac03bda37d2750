"""DCN v1 / v2 (simpledet.models.layers.dcn) and the DCN backbone stages: with zero offsets the
deformable conv is the plain conv on the same weights (v2: times the mask, sigmoid(0) = 0.5,
or 1 when the mask logits are large); a constant offset shifts the sampling grid; the
detector's initializer zeroes the offset convs; names, stages and config validation."""
import warnings

import mxnet as mx
import numpy as np
import pytest

from simpledet.config import FasterRcnnConfig
from simpledet.config.schema import ConfigError
from simpledet.detectors.base import default_initializer
from simpledet.engine.pretrained import is_backbone_param
from simpledet.models.backbone import Normalizer, ResNet
from simpledet.models.layers import deformable_conv, offset_channels


def forward(symbol, values):
    """Forward of ``symbol`` with {argument: NumPy array}."""
    args = {k: mx.nd.array(v, dtype="float32") for k, v in values.items()}
    out = symbol.bind(mx.cpu(), args).forward()[0].asnumpy()
    mx.nd.waitall()
    return out


def dcn_and_plain(version, stride, groups, deformable_groups, offset_bias=None, seed=0):
    """(deformable output, plain conv output) on the same random input and weights."""
    rng = np.random.default_rng(seed)
    data = mx.sym.var("data")
    x = rng.normal(size=(2, 8, 9, 11))
    w = rng.normal(size=(16, 8 // groups, 3, 3))
    dcn = deformable_conv(data, "conv", 16, 3, stride, groups=groups, version=version,
                          deformable_groups=deformable_groups)
    offsets = offset_channels(version, 3, deformable_groups)
    values = {"data": x, "conv_weight": w,
              "conv_offset_weight": np.zeros((offsets, 8, 3, 3)),
              "conv_offset_bias": np.zeros(offsets) if offset_bias is None else offset_bias}
    plain = mx.sym.Convolution(data, kernel=(3, 3), stride=(stride, stride), pad=(1, 1),
                               num_filter=16, num_group=groups, no_bias=True, name="conv")
    return forward(dcn, values), forward(plain, {"data": x, "conv_weight": w})


@pytest.mark.parametrize("stride,groups,deformable_groups", [(1, 1, 1), (2, 1, 1), (1, 2, 2)])
def test_v1_with_zero_offsets_is_the_plain_conv(stride, groups, deformable_groups):
    dcn, plain = dcn_and_plain(1, stride, groups, deformable_groups)
    assert dcn.shape == plain.shape
    np.testing.assert_allclose(dcn, plain, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("stride,groups,deformable_groups", [(1, 1, 1), (2, 1, 1), (1, 2, 2)])
def test_v2_with_zero_offsets_is_half_the_plain_conv(stride, groups, deformable_groups):
    dcn, plain = dcn_and_plain(2, stride, groups, deformable_groups)
    assert dcn.shape == plain.shape
    np.testing.assert_allclose(2 * dcn, plain, rtol=1e-5, atol=1e-4)  # mask sigmoid(0) = 0.5
    assert np.abs(plain).max() > 1  # not trivially zero


def test_v2_with_saturated_mask_logits_is_the_plain_conv():
    taps = 9
    bias = np.concatenate([np.zeros(2 * taps), np.full(taps, 40.0)])  # sigmoid(40) = 1 (fp32)
    dcn, plain = dcn_and_plain(2, 1, 1, 1, offset_bias=bias)
    np.testing.assert_allclose(dcn, plain, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("version", [1, 2])
def test_a_constant_offset_shifts_the_sampling_grid(version):
    """Every tap moved by dx = +1 (offsets are (dy, dx) pairs per tap): the output at column
    j is the plain conv's at column j + 1 (away from the right border)."""
    taps = 9
    shift = np.tile([0.0, 1.0], taps)
    bias = shift if version == 1 else np.concatenate([shift, np.full(taps, 40.0)])
    dcn, plain = dcn_and_plain(version, 1, 1, 1, offset_bias=bias)
    np.testing.assert_allclose(dcn[..., :-2], plain[..., 1:-1], rtol=1e-5, atol=1e-4)
    assert not np.allclose(dcn[..., :-2], plain[..., :-2], atol=1e-2)


def test_offset_channels_and_bad_arguments():
    assert offset_channels(1) == 18 and offset_channels(2) == 27
    assert offset_channels(2, 3, 4) == 108
    with pytest.raises(ValueError, match="DCN version"):
        deformable_conv(mx.sym.var("x"), "c", 4, version=3)
    with pytest.raises(ValueError, match="deformable_groups"):
        deformable_conv(mx.sym.var("x"), "c", 4, deformable_groups=0)


# --- the backbone --------------------------------------------------------------------------

def ops_of(symbol):
    import json
    return json.loads(symbol.tojson())["nodes"]


@pytest.mark.parametrize("variant,depth", [("v1b", 50), ("v1", 50), ("v2", 50), ("v1b", 18),
                                           ("resnext", 50)])
def test_dcn_stages_make_every_unit_conv2_deformable(variant, depth):
    backbone = ResNet(variant, depth, Normalizer("bn"), dcn_stages=(4, 5), dcn_version=2)
    plain = ResNet(variant, depth, Normalizer("bn"))
    feats = backbone.get_features(mx.sym.var("data"))
    symbol = mx.sym.Group(list(feats.values()))
    deformable = [n["name"] for n in ops_of(symbol)
                  if n["op"] == "_contrib_ModulatedDeformableConvolution"]
    units = backbone.units
    assert deformable == [f"stage{s}_unit{i}_conv2" for s in (3, 4)
                          for i in range(1, units[s - 1] + 1)]
    # same shapes as the plain backbone, and the same names plus the offset convs
    _, shapes, _ = symbol.infer_shape(data=(1, 3, 96, 128))
    plain_symbol = mx.sym.Group(list(plain.get_features(mx.sym.var("data")).values()))
    assert shapes == plain_symbol.infer_shape(data=(1, 3, 96, 128))[1]
    extra = [n for n in symbol.list_arguments() if n not in plain_symbol.list_arguments()]
    assert extra == [f"stage{s}_unit{i}_conv2_offset_{k}" for s in (3, 4)
                     for i in range(1, units[s - 1] + 1) for k in ("weight", "bias")]
    args, _, _ = symbol.infer_shape(data=(1, 3, 96, 128))
    shape = dict(zip(symbol.list_arguments(), args))
    assert shape["stage3_unit1_conv2_offset_weight"][0] == 27


def test_v1_uses_deformable_convolution_and_res5_in_the_head_too():
    backbone = ResNet("v1b", 50, Normalizer("fixbn"), last_stage=3, dcn_stages=(3, 4, 5),
                      dcn_version=1)
    res5 = backbone.res5(mx.sym.var("roi_feat"))
    names = [n["name"] for n in ops_of(res5) if n["op"] == "_contrib_DeformableConvolution"]
    assert names == ["stage4_unit1_conv2", "stage4_unit2_conv2", "stage4_unit3_conv2"]
    _, shapes, _ = res5.infer_shape(roi_feat=(7, 1024, 7, 7))
    assert shapes == [(7, 2048, 7, 7)]


def test_dcnv2_res5_takes_any_number_of_rois():
    """MXNet's modulated op needs the batch <= im2col_step or divisible by it: res5 on RoIs
    uses 1, so 70 RoIs (not a multiple of 64) run."""
    backbone = ResNet("v1b", 50, Normalizer("bn"), last_stage=3, dcn_stages=(5,), width=8)
    res5 = backbone.res5(mx.sym.var("roi_feat"))
    steps = {n["attrs"]["im2col_step"] for n in ops_of(res5)
             if n["op"] == "_contrib_ModulatedDeformableConvolution"}
    assert steps == {"1"}
    args, _, aux = res5.infer_shape(roi_feat=(70, 128, 7, 7))
    rng = np.random.default_rng(0)
    exe = res5.bind(mx.cpu(), {n: mx.nd.array(rng.normal(size=s) * 0.1)
                               for n, s in zip(res5.list_arguments(), args)},
                    aux_states=[mx.nd.ones(s) for s in aux])
    out = exe.forward()[0].asnumpy()
    assert out.shape == (70, 256, 7, 7) and np.isfinite(out).all()
    # the backbone stages (image batches) keep the op's default
    feats = ResNet("v1b", 50, Normalizer("bn"), dcn_stages=(5,)).get_features(mx.sym.var("d"))
    assert {n["attrs"]["im2col_step"] for n in ops_of(feats["c5"])
            if n["op"] == "_contrib_ModulatedDeformableConvolution"} == {"64"}


def dcn_config(**backbone):
    cfg = FasterRcnnConfig(pretrain=None)
    cfg.neck.type, cfg.bbox_head.type = "none", "c5"
    cfg.backbone.variant, cfg.backbone.normalizer = "v1b", "bn"
    for key, value in backbone.items():
        setattr(cfg.backbone, key, value)
    return cfg


@pytest.mark.parametrize("version", [1, 2])
def test_detector_initializer_zeroes_the_offset_convs(version):
    from simpledet.detectors.faster_rcnn import FasterRcnn

    cfg = dcn_config(depth=18, width=16, dcn_stages=(3, 4, 5), dcn_version=version)
    cfg.freeze()
    model = FasterRcnn(cfg)
    symbol = model.get_train_symbol()
    features = model.backbone.get_features(mx.sym.var("data"))
    net = mx.sym.Group(list(features.values()))
    module = mx.mod.Module(net, data_names=["data"], label_names=None, context=mx.cpu())
    module.bind(data_shapes=[("data", (1, 3, 64, 64))], for_training=False)
    module.init_params(model.initializer())
    args, _ = module.get_params()
    offsets = [n for n in args if "_offset_" in n]
    assert len(offsets) == 2 * 4  # res3 and res4 here (res5 is in the head): 2 units each
    assert all(np.all(args[n].asnumpy() == 0) for n in offsets)
    assert np.abs(args["stage2_unit1_conv2_weight"].asnumpy()).max() > 0
    # the train symbol has res5's offset convs, zero-initialised by the same attribute
    attrs = symbol.attr_dict()
    assert attrs["stage4_unit1_conv2_offset_weight"]["__init__"] == mx.init.Zero().dumps()
    assert isinstance(model.initializer(), type(default_initializer()))


def test_offset_convs_are_not_expected_in_a_pretrained_file():
    backbone = ResNet("v1b", 50, Normalizer("fixbn"), dcn_stages=(3, 4, 5))
    patterns = backbone.param_patterns()
    assert not is_backbone_param("stage2_unit1_conv2_offset_weight", patterns)
    assert is_backbone_param("stage2_unit1_conv2_weight", patterns)
    assert is_backbone_param("stage4_unit3_bn2_gamma", patterns)
    assert not is_backbone_param("fpn_p2_conv_weight", patterns)


@pytest.mark.parametrize("backbone,key", [
    ({"dcn_stages": (6,)}, "dcn_stages"),
    ({"dcn_stages": (3, 3)}, "dcn_stages"),
    ({"dcn_stages": (2, 3)}, "dcn_stages"),  # res2 is frozen by frozen_stages 1
    ({"dcn_version": 1}, "dcn_version"),  # without stages
    ({"dcn_groups": 2}, "dcn_groups"),
])
def test_config_rejects_bad_dcn_settings_naming_the_key(backbone, key):
    cfg = dcn_config(**backbone)
    with warnings.catch_warnings(), pytest.raises(ConfigError) as err:
        warnings.simplefilter("ignore")
        cfg.freeze()
    assert f"backbone.{key}" in str(err.value)


def test_config_dcn_version_is_one_or_two():
    cfg = FasterRcnnConfig()
    with pytest.raises(ConfigError, match="backbone.dcn_version"):
        cfg.backbone.dcn_version = 3
    cfg.backbone.dcn_stages = (2,)
    cfg.backbone.frozen_stages = 0
    cfg.backbone.dcn_version = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg.freeze()


# --- the stock-op DCNv2 (impl 'sampler'): MXNet 1.9.1's modulated op has no CPU backward ------

def both_impls(stride, groups, deformable_groups, size=(9, 11), seed=0):
    rng = np.random.default_rng(seed)
    offsets = offset_channels(2, 3, deformable_groups)
    values = {"data": rng.normal(size=(2, 8) + size),
              "conv_weight": rng.normal(size=(16, 8 // groups, 3, 3)),
              "conv_offset_weight": rng.normal(size=(offsets, 8, 3, 3)) * 0.3,
              "conv_offset_bias": rng.normal(size=offsets)}
    outs, symbols = [], []
    for impl in ("op", "sampler"):
        symbol = deformable_conv(mx.sym.var("data"), "conv", 16, 3, stride, groups=groups,
                                 version=2, deformable_groups=deformable_groups, impl=impl,
                                 in_channels=8)
        symbols.append(symbol)
        outs.append(forward(symbol, values))
    return outs, symbols


@pytest.mark.parametrize("stride,groups,deformable_groups,size", [
    (1, 1, 1, (9, 11)), (2, 1, 1, (9, 11)), (1, 2, 2, (9, 11)), (1, 1, 1, (1, 3))])
def test_sampler_dcnv2_equals_the_op_on_random_offsets_and_masks(stride, groups,
                                                                 deformable_groups, size):
    (op, sampler), (op_symbol, sampler_symbol) = both_impls(stride, groups, deformable_groups,
                                                            size)
    assert op.shape == sampler.shape
    np.testing.assert_allclose(sampler, op, rtol=1e-4, atol=1e-4)
    assert np.abs(op).max() > 1
    assert op_symbol.list_arguments() == sampler_symbol.list_arguments()  # same checkpoints


def test_sampler_dcnv2_gradients():
    """Zero offsets, mask 1: the data and weight gradients are the plain conv's; the offset
    bias gradient matches central differences."""
    rng = np.random.default_rng(3)
    x, w = rng.normal(size=(1, 4, 6, 7)), rng.normal(size=(5, 4, 3, 3))
    bias = np.concatenate([np.zeros(18), np.full(9, 40.0)])
    head = rng.normal(size=(1, 5, 6, 7))
    dcn = deformable_conv(mx.sym.var("data"), "c", 5, 3, version=2, impl="sampler",
                          in_channels=4)
    plain = mx.sym.Convolution(mx.sym.var("data"), kernel=(3, 3), pad=(1, 1), num_filter=5,
                               no_bias=True, name="c")

    def grads(symbol, values):
        args = {k: mx.nd.array(v) for k, v in values.items()}
        grad = {k: mx.nd.zeros(v.shape) for k, v in values.items()}
        exe = symbol.bind(mx.cpu(), args, args_grad=grad)
        exe.forward(is_train=True)
        exe.backward([mx.nd.array(head)])
        return {k: g.asnumpy() for k, g in grad.items()}

    values = {"data": x, "c_weight": w, "c_offset_weight": np.zeros((27, 4, 3, 3)),
              "c_offset_bias": bias}
    ours = grads(dcn, values)
    reference = grads(plain, {"data": x, "c_weight": w})
    np.testing.assert_allclose(ours["data"], reference["data"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(ours["c_weight"], reference["c_weight"], rtol=1e-4, atol=1e-4)

    def loss(b):
        return float((forward(dcn, {**values, "c_offset_bias": b}) * head).sum())

    values["c_offset_bias"] = bias + np.concatenate([rng.uniform(-0.3, 0.3, 18),
                                                     rng.normal(size=9) - 40])
    ours = grads(dcn, values)["c_offset_bias"]
    eps = 1e-2
    for k in (0, 1, 7, 20, 26):  # dy, dx of taps 0 and 3, masks of taps 2 and 8
        step = np.zeros(27)
        step[k] = eps
        numeric = (loss(values["c_offset_bias"] + step)
                   - loss(values["c_offset_bias"] - step)) / (2 * eps)
        assert abs(ours[k] - numeric) <= 2e-2 * max(1.0, abs(numeric)), (k, ours[k], numeric)


def test_impl_follows_the_runtime_device():
    from simpledet.models.layers.dcn import choose_impl

    assert choose_impl(2, "cpu") == "sampler"
    assert choose_impl(2, "gpu") == choose_impl(1, "cpu") == choose_impl(2, None) == "op"
    with pytest.raises(ValueError, match="'sampler' is DCNv2's"):
        deformable_conv(mx.sym.var("x"), "c", 4, version=1, impl="sampler", in_channels=4)
    from simpledet.detectors.faster_rcnn import FasterRcnn

    names, kinds = [], []
    for device in ("cpu", "gpu"):
        cfg = dcn_config(depth=18, width=16, dcn_stages=(4, 5))
        cfg.runtime.device = device
        cfg.freeze()
        symbol = FasterRcnn(cfg).get_train_symbol()
        names.append(symbol.list_arguments())
        kinds.append({n["op"] for n in ops_of(symbol)
                      if n["name"].startswith("stage3_unit1_conv2")})
    assert names[0] == names[1]  # a CPU-trained checkpoint loads on GPU
    assert "BilinearSampler" in kinds[0] and "_contrib_ModulatedDeformableConvolution" in kinds[1]
