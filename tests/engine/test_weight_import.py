"""Importing foreign ImageNet ResNets (simpledet.engine.weight_maps, scripts/convert_weights.py):
our backbone with the converted weights (fixbn) computes the same c2..c5 as the source network
in inference mode. Sources are GluonCV models built with pretrained=False and random weights and
BatchNorm statistics (nothing is downloaded); the MSRA and MXNet-model-zoo files are written
here under those layouts' names, independently of the converter's own maps."""
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest

from simpledet.engine.pretrained import (
    PretrainedError,
    convert_weights_file,
    import_weights,
    load_pretrained,
    read_weights_file,
)
from simpledet.engine.weight_maps import ConversionError, convert, parse_arch
from simpledet.models.backbone import Normalizer, ResNet

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIZE = 64
TOL = 1e-4
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing here may download: any connection attempt fails the test."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def gluon_net(name, seed, eps=None):
    """GluonCV model ``name`` (pretrained=False: no download) with random weights and random
    BatchNorm statistics; conv biases random too (GluonCV v1 has them)."""
    from gluoncv import model_zoo

    net = model_zoo.get_model(name, pretrained=False)
    if eps is not None:  # the MXNet model zoo's BatchNorms use 2e-5
        for block in _blocks(net):
            if type(block).__name__ == "BatchNorm":
                block._kwargs["eps"] = eps
    net.initialize(mx.init.MSRAPrelu(slope=0.0))
    net(mx.nd.zeros((1, 3, SIZE, SIZE)))
    rng = np.random.default_rng(seed)
    for name_, param in net._collect_params_with_prefix().items():
        shape = param.shape
        if name_.endswith("gamma"):
            value = rng.uniform(0.3, 0.8, shape)
        elif name_.endswith(("beta", "bias")):
            value = rng.normal(0.0, 0.1, shape)
        elif name_.endswith("running_mean"):
            value = rng.normal(0.0, 0.2, shape)
        elif name_.endswith("running_var"):
            value = rng.uniform(0.5, 2.0, shape)
        else:
            continue
        param.set_data(mx.nd.array(value.astype(np.float32)))
    return net


def _blocks(block):
    yield block
    for child in block._children.values():
        yield from _blocks(child)


def image(seed=0):
    """(1, 3, SIZE, SIZE) raw 0..255 pixels."""
    return np.random.default_rng(seed).uniform(0, 255, (1, 3, SIZE, SIZE)).astype(np.float32)


def imagenet_normalized(pixels):
    """GluonCV's classifier input."""
    return (pixels / 255.0 - IMAGENET_MEAN) / IMAGENET_STD


def config_normalized(pixels, *overrides):
    """What the loader feeds the backbone of a config with these --set overrides: raw pixels
    normalized by backbone.pixel_mean / pixel_std."""
    from simpledet.config import load_config

    cfg = load_config(os.path.join(REPO, "config", "faster_r50v1b_fpn_1x.py"), list(overrides))
    mean = np.array(cfg.backbone.pixel_mean, np.float32).reshape(1, 3, 1, 1)
    std = np.array(cfg.backbone.pixel_std, np.float32).reshape(1, 3, 1, 1)
    return (pixels - mean) / std


def gluon_features(net, layout, data):
    """c2..c5 of a GluonCV ResNet in inference mode."""
    x = mx.nd.array(data)
    outs = []
    if layout == "v1b":
        for layer in (net.conv1, net.bn1, net.relu, net.maxpool):
            x = layer(x)
        for stage in (net.layer1, net.layer2, net.layer3, net.layer4):
            x = stage(x)
            outs.append(x.asnumpy())
        return outs
    first = 4 if layout in ("v1", "resnext") else 5  # v2 starts with its input BatchNorm
    for index, layer in enumerate(net.features):
        if index >= first + 4:
            break
        x = layer(x)
        if index >= first:
            outs.append(x.asnumpy())
    return outs


def our_features(variant, depth, arg_params, aux_params, data, **resnext):
    """c2..c5 of this package's backbone (fixbn) with the given parameters."""
    net = ResNet(variant, depth, Normalizer("fixbn"), **resnext)
    feats = net.get_features(mx.sym.var("data"))
    group = mx.sym.Group([feats[k] for k in ("c2", "c3", "c4", "c5")])
    args = {k: mx.nd.array(v) for k, v in arg_params.items()}
    args["data"] = mx.nd.array(data)
    aux = {k: mx.nd.array(v) for k, v in aux_params.items()}
    missing = set(group.list_arguments()) - set(args)
    assert not missing, missing
    assert set(group.list_auxiliary_states()) <= set(aux)
    exe = group.bind(mx.cpu(), args, aux_states=aux, grad_req="null")
    return [o.asnumpy() for o in exe.forward(is_train=False)]


def assert_features_equal(ours, theirs):
    diffs = []
    for level, (a, b) in enumerate(zip(ours, theirs, strict=True), start=2):
        assert a.shape == b.shape, (level, a.shape, b.shape)
        assert np.abs(b).max() > 1e-2, f"c{level} is degenerate"
        diffs.append(float(np.abs(a - b).max()))
    scale = [float(np.abs(b).max()) for b in theirs]
    print(f"max abs diff c2..c5: {['%.2e' % d for d in diffs]} (max |feature| "
          f"{['%.1f' % m for m in scale]})")
    assert max(diffs) <= TOL, f"max abs diff per level c2..c5: {diffs}"
    return diffs


def report_sets(report):
    """The --set values the converter prints for the report's architecture."""
    return parse_arch(report.source, report.arch).config_overrides()


def save_gluon(net, path):
    net.save_parameters(str(path))
    return str(path)


def numpy_params(net):
    return {k: v.data().asnumpy() for k, v in net._collect_params_with_prefix().items()}


def test_gluoncv_resnet50_v1b_file_matches_gluoncv_features(tmp_path):
    net = gluon_net("resnet50_v1b", seed=1)
    src = save_gluon(net, tmp_path / "resnet50_v1b.params")
    dst = str(tmp_path / "out" / "resnet50_v1b-0000.params")
    report = convert_weights_file(src, dst, "gluoncv", "resnet50_v1b")
    assert report.ok and report.ignored == ["fc.bias", "fc.weight"]
    assert len(report.converted) == 265  # 53 convs + 53 BatchNorms x 4
    loaded = mx.nd.load(dst)
    arg = {k[4:]: v.asnumpy() for k, v in loaded.items() if k.startswith("arg:")}
    aux = {k[4:]: v.asnumpy() for k, v in loaded.items() if k.startswith("aux:")}
    assert "stage1_unit1_sc_weight" in arg and "bn0_moving_var" in aux
    pixels = image()
    ours = our_features("v1b", 50, arg, aux, config_normalized(pixels, *report_sets(report)))
    assert_features_equal(ours, gluon_features(net, "v1b", imagenet_normalized(pixels)))


def test_gluoncv_flat_save_params_names_convert_the_same(tmp_path):
    """Older GluonCV files use flat names (``resnetv1b_layers1_conv0_weight``)."""
    net = gluon_net("resnet18_v1b", seed=2)
    flat = {k: v.data() for k, v in net.collect_params().items()}
    assert any(k.startswith("resnetv1b_layers1_conv0") for k in flat)
    path = str(tmp_path / "flat.params")
    mx.nd.save(path, flat)
    arg, aux, report = import_weights(path, "gluoncv", "resnet18_v1b")
    arg2, aux2, _ = convert(numpy_params(net), "gluoncv", "resnet18_v1b")
    assert sorted(arg) == sorted(arg2) and sorted(aux) == sorted(aux2)
    for name in arg:
        np.testing.assert_array_equal(arg[name].asnumpy(), arg2[name])


def test_gluoncv_resnet50_v1_folds_conv_biases(tmp_path):
    """GluonCV resnet50_v1: stride in the first 1x1 conv (our v1), 1x1 convs with biases."""
    net = gluon_net("resnet50_v1", seed=3)
    params = numpy_params(net)
    assert np.abs(params["features.4.0.body.0.bias"]).max() > 0
    arg, aux, report = convert(params, "gluoncv", "resnet50_v1")
    assert any("conv biases" in line for line in report.folds)
    sets = report_sets(report)
    assert "backbone.pixel_stats=imagenet" in sets and "backbone.variant=v1" in sets
    pixels = image(1)
    assert_features_equal(our_features("v1", 50, arg, aux, config_normalized(pixels, *sets)),
                          gluon_features(net, "v1", imagenet_normalized(pixels)))


# MSRA ResNet v1 (Caffe) names, written from the published layout: conv1 / bn_conv1, then per
# block res{stage}{letter}_branch2{a,b,c} + bn..., projection res{stage}a_branch1 + bn....
def msra_names_for_gluon_v1(depth_units):
    names = {"features.0": "conv1", "features.1": "bn_conv1"}
    for stage, count in enumerate(depth_units, start=2):
        for i in range(count):
            block = f"{stage}{'abcdefghijklmnopqrstuvwxyz'[i]}"
            prefix = f"features.{stage + 2}.{i}"
            for body, branch in ((0, "2a"), (3, "2b"), (6, "2c")):
                names[f"{prefix}.body.{body}"] = f"res{block}_branch{branch}"
                names[f"{prefix}.body.{body + 1}"] = f"bn{block}_branch{branch}"
            names[f"{prefix}.downsample.0"] = f"res{block}_branch1"
            names[f"{prefix}.downsample.1"] = f"bn{block}_branch1"
    return names


def write_mxnet_layout(net, names, path, classifier):
    """Saves a Gluon net's parameters under MXNet-symbol names ('arg:'/'aux:' keys, BN
    statistics as moving_mean/moving_var), as SimpleDet's pretrain_model files."""
    payload = {}
    for key, value in numpy_params(net).items():
        layer, param = key.rsplit(".", 1)
        if layer in names:
            param = {"running_mean": "moving_mean", "running_var": "moving_var"}.get(param,
                                                                                    param)
            kind = "aux" if param.startswith("moving") else "arg"
            payload[f"{kind}:{names[layer]}_{param}"] = mx.nd.array(value)
        else:
            assert layer == "output", key
    payload[f"arg:{classifier}_weight"] = mx.nd.ones((10, 2048))
    payload[f"arg:{classifier}_bias"] = mx.nd.zeros(10)
    mx.nd.save(str(path), payload)
    return str(path)


def test_msra_resnet_v1_50_file_matches(tmp_path):
    net = gluon_net("resnet50_v1", seed=4)
    for name, param in net._collect_params_with_prefix().items():
        if name.endswith(".bias") and "body" in name:  # MSRA convs have no bias
            param.set_data(mx.nd.zeros(param.shape))
    src = write_mxnet_layout(net, msra_names_for_gluon_v1((3, 4, 6, 3)),
                             tmp_path / "resnet-v1-50-msra.params", "fc1000")
    dst = str(tmp_path / "resnet-v1-50-0000.params")
    report = convert_weights_file(src, dst, "msra", "resnet-v1-50")
    assert report.ok and report.ignored == ["fc1000_bias", "fc1000_weight"]
    loaded = mx.nd.load(dst)
    arg = {k[4:]: v.asnumpy() for k, v in loaded.items() if k.startswith("arg:")}
    aux = {k[4:]: v.asnumpy() for k, v in loaded.items() if k.startswith("aux:")}
    np.testing.assert_array_equal(arg["stage3_unit6_conv2_weight"],
                                  mx.nd.load(src)["arg:res4f_branch2b_weight"].asnumpy())
    pixels = image(2)
    data = config_normalized(pixels, *report_sets(report))  # the MSRA mean only
    assert np.abs(data).max() > 100
    assert_features_equal(our_features("v1", 50, arg, aux, data),
                          gluon_features(net, "v1", data))


def test_msra_resnet_101_block_names():
    """Caffe ResNet-101 names res3/res4 blocks a, b1, b2, ...; res2/res5 a, b, c."""
    from simpledet.engine.weight_maps import layer_map

    mapping = layer_map(parse_arch("msra", "resnet-v1-101"))
    assert mapping["stage3_unit23_conv1"] == "res4b22_branch2a"
    assert mapping["stage2_unit2_bn3"] == "bn3b1_branch2c"
    assert mapping["stage4_unit3_conv2"] == "res5c_branch2b"
    assert mapping["stage1_unit1_sc_bn"] == "bn2a_branch1"


def mxnet_zoo_names_for_gluon_v2(depth_units):
    names = {"features.0": "bn_data", "features.1": "conv0", "features.2": "bn0",
             "features.9": "bn1"}
    for stage, count in enumerate(depth_units, start=1):
        for i in range(count):
            prefix, ours = f"features.{stage + 4}.{i}", f"stage{stage}_unit{i + 1}"
            for layer in ("bn1", "conv1", "bn2", "conv2", "bn3", "conv3"):
                names[f"{prefix}.{layer}"] = f"{ours}_{layer}"
            names[f"{prefix}.downsample"] = f"{ours}_sc"
    return names


def test_mxnet_zoo_resnet_50_v2_file_matches(tmp_path):
    """The model zoo's symbolic resnet-50 (v2): our names, BatchNorm eps 2e-5 (folded), bn_data
    whitening the raw pixels."""
    net = gluon_net("resnet50_v2", seed=5, eps=2e-5)
    src = write_mxnet_layout(net, mxnet_zoo_names_for_gluon_v2((3, 4, 6, 3)),
                             tmp_path / "resnet-50-0000.params", "fc1")
    arg, aux, report = import_weights(src, "mxnet", "resnet-50")
    assert any("eps 2e-05 -> 1e-05" in line for line in report.folds)
    file_var = mx.nd.load(src)["aux:stage2_unit1_bn2_moving_var"].asnumpy()
    np.testing.assert_allclose(aux["stage2_unit1_bn2_moving_var"].asnumpy(), file_var + 1e-5,
                               rtol=0, atol=2e-7)
    np.testing.assert_array_equal(aux["bn_data_moving_var"].asnumpy(),  # same eps as ours
                                  mx.nd.load(src)["aux:bn_data_moving_var"].asnumpy())
    data = image(3) * 0.02  # keep the random bn_data's output in a sane range
    ours = our_features("v2", 50, {k: v.asnumpy() for k, v in arg.items()},
                        {k: v.asnumpy() for k, v in aux.items()}, data)
    assert_features_equal(ours, gluon_features(net, "v2", data))


def test_gluoncv_resnet50_v2_folds_imagenet_normalization_into_bn_data():
    """GluonCV v2 reads ImageNet-normalized pixels; our v2 configs feed raw 0..255 pixels."""
    net = gluon_net("resnet50_v2", seed=6)
    arg, aux, report = convert(numpy_params(net), "gluoncv", "resnet50_v2")
    assert any("bn_data" in line for line in report.folds)
    pixels = image(4)
    np.testing.assert_array_equal(config_normalized(pixels, *report_sets(report)), pixels)
    assert_features_equal(our_features("v2", 50, arg, aux, pixels),
                          gluon_features(net, "v2", imagenet_normalized(pixels)))


def test_gluoncv_basic_v2_is_refused_with_the_reason():
    with pytest.raises(ConversionError, match="cannot be mapped exactly"):
        parse_arch("gluoncv", "resnet18_v2")


def test_gluoncv_resnext50_32x4d_matches():
    net = gluon_net("resnext50_32x4d", seed=8)
    arg, aux, report = convert(numpy_params(net), "gluoncv", "resnext50_32x4d")
    assert report.target == "resnext-50-32x4d"
    pixels = image(6)
    ours = our_features("resnext", 50, arg, aux, config_normalized(pixels, *report_sets(report)),
                        resnext_groups=32, resnext_group_width=4)
    assert_features_equal(ours, gluon_features(net, "resnext", imagenet_normalized(pixels)))


def torchvision_state(net):
    """A GluonCV v1b net's parameters under torchvision's state-dict names (the same module
    tree; BatchNorm affine named weight/bias)."""
    state = {}
    for key, value in numpy_params(net).items():
        key = key.replace(".gamma", ".weight").replace(".beta", ".bias")
        state[key] = value
        if key.endswith("running_var"):
            state[key.replace("running_var", "num_batches_tracked")] = np.array(7.0)
    return state


def test_torchvision_layout_matches_without_torch():
    """The name map needs no torch: a torchvision-named dict of a GluonCV v1b net."""
    net = gluon_net("resnet50_v1b", seed=9)
    arg, aux, report = convert(torchvision_state(net), "torchvision", "resnet50")
    assert report.target == "resnet50_v1b"
    assert "fc.weight" in report.ignored and "bn1.num_batches_tracked" in report.ignored
    data = imagenet_normalized(image(7))
    assert_features_equal(our_features("v1b", 50, arg, aux, data),
                          gluon_features(net, "v1b", data))


def test_torchvision_pth_file(tmp_path):
    torch = pytest.importorskip("torch", reason="torch is not installed (optional extra)")
    net = gluon_net("resnet18_v1b", seed=10)
    state = {k: torch.from_numpy(np.asarray(v)) for k, v in torchvision_state(net).items()}
    path = str(tmp_path / "resnet18.pth")
    torch.save({"state_dict": state}, path)
    arg, aux, _ = import_weights(path, "torchvision", "resnet18")
    data = imagenet_normalized(image(8))
    assert_features_equal(
        our_features("v1b", 18, {k: v.asnumpy() for k, v in arg.items()},
                     {k: v.asnumpy() for k, v in aux.items()}, data),
        gluon_features(net, "v1b", data))


def test_pth_without_torch_is_a_one_line_error(tmp_path, monkeypatch):
    path = tmp_path / "resnet50.pth"
    path.write_bytes(b"\x80\x02}q\x00.")
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(PretrainedError) as info:
        read_weights_file(str(path), "torchvision")
    message = str(info.value)
    assert "needs PyTorch, which is not installed" in message and str(path) in message
    assert "\n" not in message


# --- the report fails loudly -----------------------------------------------------------------

def resnet18_params(seed=11):
    return numpy_params(gluon_net("resnet18_v1b", seed=seed))


def test_missing_tensor_is_an_error_naming_it():
    params = resnet18_params()
    del params["layer3.1.bn2.running_var"]
    with pytest.raises(ConversionError, match=r"1 missing in the file: "
                                              r"layer3\.1\.bn2\.running_var"):
        convert(params, "gluoncv", "resnet18_v1b")


def test_shape_mismatch_is_an_error_naming_both_names():
    params = resnet18_params()
    params["layer2.0.conv1.weight"] = np.zeros((128, 64, 1, 1), np.float32)
    with pytest.raises(ConversionError, match=r"stage2_unit1_conv1_weight <- "
                                              r"layer2\.0\.conv1\.weight: file \(128, 64, 1, 1\) "
                                              r"vs expected \(128, 64, 3, 3\)"):
        convert(params, "gluoncv", "resnet18_v1b")


def test_wrong_depth_reports_unexpected_and_missing():
    """A ResNet-34 file declared as ResNet-18: extra blocks are unexpected (strict)."""
    params = numpy_params(gluon_net("resnet34_v1b", seed=12))
    with pytest.raises(ConversionError, match=r"unexpected in the file: layer1\.2\.") as info:
        convert(params, "gluoncv", "resnet18_v1b")
    assert "is --arch the file's architecture?" in str(info.value)
    with pytest.raises(ConversionError, match="missing in the file: layer1.2.conv1.weight"):
        convert(resnet18_params(), "gluoncv", "resnet34_v1b")


def test_unknown_arch_and_source_name_the_accepted_forms():
    with pytest.raises(ConversionError, match=r"resnet50_v1d.*deep 3x3 stems.*accepted"):
        parse_arch("gluoncv", "resnet50_v1d")
    with pytest.raises(ConversionError, match="unknown source 'caffe'"):
        parse_arch("caffe", "resnet-v1-50")
    with pytest.raises(ConversionError, match="accepted: resnet-v1-"):
        parse_arch("msra", "resnet50")


def test_mxnet_zoo_resnext_with_bn_data_is_refused():
    params = {"arg:bn_data_gamma": np.ones(3), "arg:conv0_weight": np.ones((64, 3, 7, 7))}
    with pytest.raises(ConversionError, match="cannot be folded into conv0 exactly"):
        convert(params, "mxnet", "resnext-50-32x4d")


def test_bgr_input_reverses_conv0_input_channels():
    params = resnet18_params()
    arg, _, _ = convert(params, "gluoncv", "resnet18_v1b")
    flipped, _, report = convert(params, "gluoncv", "resnet18_v1b", bgr_input=True)
    np.testing.assert_array_equal(flipped["conv0_weight"], arg["conv0_weight"][:, ::-1])
    assert any("BGR" in line for line in report.folds)


# --- the converted file in the training loader ----------------------------------------------

def test_converted_file_loads_strictly_into_a_detector(tmp_path):
    """pretrain=<converted file> holds every backbone parameter of a v1b R18 FPN detector."""
    from simpledet.config import load_config
    from simpledet.engine.build import build_detector

    src = save_gluon(gluon_net("resnet18_v1b", seed=13), tmp_path / "r18.params")
    dst = str(tmp_path / "resnet18_v1b-0000.params")
    convert_weights_file(src, dst, "gluoncv", "resnet18_v1b")
    cfg = load_config(os.path.join(REPO, "config", "faster_r50v1b_fpn_1x.py"),
                      ["backbone.depth=18", f"pretrain={dst}"])
    detector = build_detector(cfg)
    symbol = detector.get_test_symbol()
    args = [n for n in symbol.list_arguments() if n not in detector.test_data_names]
    _, _, report = load_pretrained(dst, args, symbol.list_auxiliary_states(),
                                   backbone_patterns=detector.backbone_param_patterns())
    assert report.missing == [] and report.unexpected == []
    assert len(report.loaded) == 20 + 20 * 4  # convs, BatchNorms x (gamma beta mean var)
    assert any(n.startswith("fpn_") for n in report.head)


def test_foreign_file_given_as_pretrain_names_the_converter(tmp_path):
    path = save_gluon(gluon_net("resnet18_v1b", seed=14), tmp_path / "gluon.params")
    with pytest.raises(PretrainedError, match=r"looks like a gluoncv checkpoint.*"
                                              r"convert_weights\.py --source gluoncv"):
        load_pretrained(path, ["conv0_weight", "stage1_unit1_conv1_weight"], [],
                        backbone_patterns=[r"^(conv0|stage1_unit1)_"])


# --- the CLI ---------------------------------------------------------------------------------

def run_cli(*args):
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "convert_weights.py"),
                           *args], capture_output=True, text=True, env=env, cwd=str(REPO),
                          timeout=300)


def test_cli_converts_and_prints_the_config_settings(tmp_path, monkeypatch, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "convert_weights", os.path.join(REPO, "scripts", "convert_weights.py"))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    src = save_gluon(gluon_net("resnet18_v1", seed=15), tmp_path / "r18.params")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--source", "gluoncv", "--arch", "resnet18_v1", src]) == 0
    out = capsys.readouterr().out
    dst = "pretrain_model/resnet18_v1-0000.params"  # not resnet-v1-18: other pixel stats
    assert os.path.isfile(tmp_path / dst)
    assert (f"--set backbone.variant=v1 backbone.depth=18 backbone.pixel_stats=imagenet "
            f"pretrain={dst}") in out
    assert "conv biases" not in out  # basic units: no biased 1x1 convs


def test_cli_mismatch_is_a_one_line_error(tmp_path):
    src = save_gluon(gluon_net("resnet18_v1b", seed=16), tmp_path / "r18.params")
    result = run_cli("--source", "gluoncv", "--arch", "resnet34_v1b", src,
                     str(tmp_path / "out.params"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "missing in the file" in lines[0] and src in lines[0]
    assert not os.path.exists(tmp_path / "out.params")
