"""Pretrained weights from a local .params file: key report, layouts, missing file, shapes,
strictness (missing / misshapen backbone parameters are errors naming them unless
pretrain_strict=False; head parameters may be missing), which names count as backbone, and
the CLI's one-line error."""
import logging
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import pytest
from standin_detector import StandInDetector, tiny_config, write_tiny_coco

from simpledet.config import ConfigError, load_config
from simpledet.engine.build import build_dataset, build_detector, build_train_loader
from simpledet.engine.pretrained import (
    PretrainedError,
    check_pretrained_exists,
    check_shapes,
    fit_shapes,
    is_backbone_param,
    load_pretrained,
)
from simpledet.engine.trainer import build_trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ARGS = ["stem_conv_weight", "stem_conv_bias", "stem_bn_gamma", "stem_bn_beta", "head_weight"]
AUX = ["stem_bn_moving_mean", "stem_bn_moving_var"]
BACKBONE = [r"^stem_"]  # the stand-in detector's backbone: stem_*; head_weight is a head
FULL_STEM = {"arg:stem_conv_weight": np.ones((4, 3, 3, 3)), "arg:stem_conv_bias": np.zeros(4),
             "arg:stem_bn_gamma": np.ones(4), "arg:stem_bn_beta": np.zeros(4),
             "aux:stem_bn_moving_mean": np.zeros(4), "aux:stem_bn_moving_var": np.ones(4)}


def write_params(path, payload):
    mx.nd.save(str(path), {k: mx.nd.array(v) for k, v in payload.items()})
    return str(path)


def test_prefixed_file_reports_missing_and_unexpected(tmp_path):
    path = write_params(tmp_path / "r50.params", {
        "arg:stem_conv_weight": np.ones((4, 3, 3, 3)), "arg:stem_bn_gamma": np.ones(4),
        "aux:stem_bn_moving_mean": np.zeros(4), "arg:fc1000_weight": np.ones((10, 4)),
        "aux:other_moving_var": np.ones(2)})
    arg_params, aux_params, report = load_pretrained(path, ARGS, AUX, backbone_patterns=BACKBONE,
                                                     strict=False)
    assert sorted(arg_params) == ["stem_bn_gamma", "stem_conv_weight"]
    assert sorted(aux_params) == ["stem_bn_moving_mean"]
    assert report.missing == ["stem_bn_beta", "stem_bn_moving_var", "stem_conv_bias"]
    assert report.head == ["head_weight"]
    assert report.unexpected == ["arg:fc1000_weight", "aux:other_moving_var"]
    summary = report.summary()
    assert "loaded 3 parameters" in summary and "fc1000_weight" in summary
    assert "backbone parameters missing" in summary and "stem_bn_beta" in summary
    assert "head parameters initialized" in summary and "head_weight" in summary


def test_strict_missing_backbone_parameters_are_an_error_naming_them(tmp_path):
    path = write_params(tmp_path / "r50.params", {
        "arg:stem_conv_weight": np.ones((4, 3, 3, 3)), "arg:stem_bn_gamma": np.ones(4),
        "aux:stem_bn_moving_mean": np.zeros(4), "arg:fc1000_weight": np.ones((10, 4))})
    with pytest.raises(PretrainedError) as info:
        load_pretrained(path, ARGS, AUX, "auto", backbone_patterns=BACKBONE)
    message = str(info.value)
    assert "3 backbone parameter(s) are not in the file" in message
    for name in ("stem_bn_beta", "stem_bn_moving_var", "stem_conv_bias", path,
                 "pretrain_strict=false", "fc1000_weight"):
        assert name in message, (name, message)
    assert "head_weight" not in message  # heads are expected to be missing
    assert "\n" not in message  # one line for the CLI


def test_strict_load_of_a_complete_backbone_leaves_only_heads_to_initialize(tmp_path):
    path = write_params(tmp_path / "r50.params", FULL_STEM)
    arg_params, aux_params, report = load_pretrained(path, ARGS, AUX,
                                                     backbone_patterns=BACKBONE)
    assert len(arg_params) == 4 and len(aux_params) == 2
    assert report.missing == [] and report.head == ["head_weight"] and report.strict


def test_without_backbone_patterns_every_parameter_is_a_head(tmp_path):
    path = write_params(tmp_path / "empty.params", {"arg:unrelated_weight": np.ones(2)})
    _, _, report = load_pretrained(path, ARGS, AUX, backbone_patterns=[])
    assert report.missing == [] and len(report.head) == len(ARGS) + len(AUX)


def test_fit_shapes_strict_raises_and_lenient_drops_with_a_warning(caplog):
    args = {"stem_conv_weight": mx.nd.ones((4, 3, 1, 1)), "stem_bn_gamma": mx.nd.ones(4)}
    aux = {"stem_bn_moving_var": mx.nd.ones(5)}
    shapes = {"stem_conv_weight": (4, 3, 3, 3), "stem_bn_gamma": (4,),
              "stem_bn_moving_var": (4,)}
    with pytest.raises(PretrainedError, match=r"2 parameter\(s\) have the wrong shape: "
                                              r"stem_bn_moving_var: file \(5,\) vs model "
                                              r"\(4,\); stem_conv_weight"):
        fit_shapes(args, aux, shapes, "w.params")
    with caplog.at_level(logging.WARNING, logger="simpledet.engine.pretrained"):
        kept_args, kept_aux = fit_shapes(args, aux, shapes, "w.params", strict=False)
    assert list(kept_args) == ["stem_bn_gamma"] and kept_aux == {}
    assert "stem_conv_weight: file (4, 3, 1, 1) vs model (4, 3, 3, 3)" in caplog.text
    assert "stem_bn_moving_var" in caplog.text


def test_plain_names_go_to_aux_when_the_model_says_so(tmp_path):
    path = write_params(tmp_path / "gluon.params", {
        "stem_conv_weight": np.ones((4, 3, 3, 3)), "stem_bn_moving_var": np.ones(4)})
    arg_params, aux_params, report = load_pretrained(path, ARGS, AUX, backbone_patterns=[])
    assert list(arg_params) == ["stem_conv_weight"]
    assert list(aux_params) == ["stem_bn_moving_var"]
    assert report.unexpected == []


def test_missing_file_names_the_path_and_the_way_out(tmp_path):
    path = str(tmp_path / "pretrain_model" / "resnet-v1-50-0000.params")
    with pytest.raises(PretrainedError) as info:
        check_pretrained_exists(path, "auto")
    message = str(info.value)
    assert path in message and "--set pretrain=none" in message
    with pytest.raises(PretrainedError, match="--set pretrain=none"):
        load_pretrained(path, ARGS, AUX, backbone_patterns=BACKBONE)
    check_pretrained_exists(None)  # from scratch: nothing to check


def test_unreadable_file_and_wrong_shapes(tmp_path):
    bad = tmp_path / "bad.params"
    bad.write_bytes(b"not a params file")
    with pytest.raises(PretrainedError, match="not a readable MXNet .params file"):
        load_pretrained(str(bad), ARGS, AUX, backbone_patterns=BACKBONE)
    with pytest.raises(PretrainedError, match=r"stem_conv_weight: file \(4, 3, 1, 1\) vs model "
                                              r"\(4, 3, 3, 3\)"):
        check_shapes({"stem_conv_weight": mx.nd.ones((4, 3, 1, 1))},
                     {"stem_conv_weight": (4, 3, 3, 3)}, "x.params")


def standin_trainer(tmp_path, **changes):
    write_tiny_coco(str(tmp_path), "train", [(40, 56), (56, 40), (30, 44), (44, 60)])
    cfg = tiny_config(tmp_path, **changes)
    detector = StandInDetector(cfg)
    loader = build_train_loader(cfg, build_dataset(cfg, "train", True).records, detector)
    return build_trainer(cfg, detector, loader, [mx.cpu(0)], max_iter=2, hooks=[])


def test_trainer_starts_from_the_pretrained_values(tmp_path):
    weight = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    path = write_params(tmp_path / "w.params", {**FULL_STEM, "arg:stem_conv_weight": weight,
                                                "arg:classifier_weight": np.ones((2, 2))})
    trainer = standin_trainer(tmp_path, pretrain=path)
    trainer.train()
    arg_params, _ = trainer.module.get_params()
    # stem_conv is fixed by the detector's pattern, so it still holds the file's values
    np.testing.assert_array_equal(arg_params["stem_conv_weight"].asnumpy(), weight)


def test_trainer_refuses_a_file_without_the_backbone(tmp_path):
    path = write_params(tmp_path / "w.params", {"arg:stem_conv_weight": np.ones((4, 3, 3, 3)),
                                                "arg:classifier_weight": np.ones((2, 2))})
    with pytest.raises(PretrainedError, match="5 backbone parameter.*stem_bn_beta"):
        standin_trainer(tmp_path, pretrain=path)


def test_trainer_refuses_a_misshapen_backbone_entry_when_it_binds(tmp_path):
    path = write_params(tmp_path / "w.params", {**FULL_STEM,
                                                "arg:stem_conv_weight": np.ones((4, 3, 1, 1))})
    trainer = standin_trainer(tmp_path, pretrain=path)
    with pytest.raises(PretrainedError, match=r"w.params: 1 parameter\(s\) have the wrong shape: "
                                              r"stem_conv_weight: file \(4, 3, 1, 1\)"):
        trainer.train()


def test_pretrain_strict_false_loads_partially_and_reports(tmp_path, caplog):
    gamma = np.array([2.0, 3.0, 4.0, 5.0], np.float32)
    path = write_params(tmp_path / "w.params", {"arg:stem_bn_gamma": gamma,
                                                "arg:stem_conv_weight": np.ones((4, 3, 1, 1))})
    with caplog.at_level(logging.INFO):
        trainer = standin_trainer(tmp_path, pretrain=path, pretrain_strict=False)
        trainer.train()
    arg_params, _ = trainer.module.get_params()
    weight = arg_params["stem_conv_weight"].asnumpy()  # fixed: still the initializer's values
    assert weight.shape == (4, 3, 3, 3) and not np.all(weight == 1.0)
    assert np.abs(arg_params["stem_bn_gamma"].asnumpy() - gamma).max() < 0.5  # loaded, trained
    assert "backbone parameters missing in the file" in caplog.text
    assert "stem_bn_moving_var" in caplog.text
    assert "wrong shape and are initialized instead" in caplog.text


@pytest.mark.filterwarnings("ignore::UserWarning")  # fixbn without pretrain; C4 sampler note
@pytest.mark.parametrize("config", ["faster_r50v1_fpn_1x.py", "faster_r50v1c4_c5_512roi_1x.py",
                                    "faster_r50v2c4_c5_256roi_1x.py"])
def test_backbone_patterns_cover_the_backbone_and_no_head(config):
    cfg = load_config(os.path.join(REPO, "config", config), ["pretrain=none"])
    detector = build_detector(cfg)
    patterns = detector.backbone_param_patterns()
    symbol = detector.get_train_symbol()
    names = [n for n in symbol.list_arguments() + symbol.list_auxiliary_states()
             if n not in detector.train_data_names]
    backbone = {n for n in names if is_backbone_param(n, patterns)}
    heads = set(names) - backbone
    # heads are exactly the prefixed components; everything unprefixed is the backbone's
    assert heads and all(n.startswith(("fpn_", "rpn_", "bbox_", "roi_")) for n in heads), heads
    features = detector.backbone.get_features(mx.sym.var("data"))
    built = mx.sym.Group(list(features.values()))
    assert set(built.list_arguments() + built.list_auxiliary_states()) - {"data"} <= backbone
    if cfg.neck.type == "none":  # C4: res5 runs in the box head but loads from the backbone file
        assert "stage4_unit1_conv1_weight" in backbone
        assert any(n.startswith("stage4_unit3_") for n in backbone)
    assert "conv0_weight" in backbone and "stage1_unit1_conv1_weight" in backbone


def test_pretrain_strict_is_a_validated_config_field():
    path = os.path.join(REPO, "config", "faster_r50v1_fpn_1x.py")
    assert load_config(path).pretrain_strict is True
    assert load_config(path, ["pretrain_strict=false"]).pretrain_strict is False
    with pytest.raises(ConfigError, match="'pretrain_strict' expects bool, got 3"):
        load_config(path, ["pretrain_strict=3"])
    with pytest.raises(ConfigError, match="did you mean 'pretrain_strict'"):
        load_config(path, ["pretrain_stric=false"])


def run_train_cli(tmp_path, params, *overrides):
    """detection_train.py on the shapes FPN config shrunk to 4 tiny images, 1 iteration."""
    write_tiny_coco(str(tmp_path), "train", [(40, 56), (56, 40), (30, 44), (44, 60)])
    args = ["--config", os.path.join(REPO, "config", "shapes", "faster_fpn.py"), "--max-iter",
            "1", "--set", "dataset.synthetic=none", f"dataset.root={tmp_path}",
            "dataset.train_split=train", "dataset.class_names=('a', 'b')", "input.short=40",
            "input.long=60", "input.loader_workers=0", "train.images_per_device=1",
            "train.warmup_iters=0", f"output_root={tmp_path / 'out'}", f"pretrain={params}",
            *overrides]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, os.path.join(REPO, "detection_train.py"), *args],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=180,
                          check=False, env=env)


def shapes_backbone_file(tmp_path, drop=(), reshape=()):
    """A .params file with every backbone parameter of the shrunk shapes config (zeros; the
    moving variances ones) less ``drop``, with ``reshape`` names given a wrong shape."""
    cfg = load_config(os.path.join(REPO, "config", "shapes", "faster_fpn.py"), ["pretrain=none"])
    detector = build_detector(cfg)
    symbol = detector.get_train_symbol()
    arg_shapes, _, aux_shapes = symbol.infer_shape(**detector.train_data_shapes(1, 64, 64))
    payload = {}
    for prefix, names, shapes in (("arg", symbol.list_arguments(), arg_shapes),
                                  ("aux", symbol.list_auxiliary_states(), aux_shapes)):
        for name, shape in zip(names, shapes):
            if is_backbone_param(name, detector.backbone_param_patterns()) and name not in drop:
                shape = (shape[0] + 1,) + tuple(shape[1:]) if name in reshape else shape
                fill = np.ones if name.endswith("_var") else np.zeros
                payload[f"{prefix}:{name}"] = fill(shape)
    return write_params(tmp_path / "backbone.params", payload)


def one_error_line(proc):
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, (proc.returncode, output[-3000:])
    assert "Traceback" not in output, output[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def test_cli_names_missing_backbone_parameters_in_one_line(tmp_path):
    path = shapes_backbone_file(tmp_path, drop=("bn0_beta", "stage2_unit1_conv2_weight"))
    line = one_error_line(run_train_cli(tmp_path, path))
    for needle in ("2 backbone parameter(s) are not in the file", "bn0_beta",
                   "stage2_unit1_conv2_weight", "pretrain_strict=false", path):
        assert needle in line, (needle, line)


def test_cli_names_a_misshapen_backbone_entry_in_one_line(tmp_path):
    path = shapes_backbone_file(tmp_path, reshape=("stage1_unit1_bn1_gamma",))
    line = one_error_line(run_train_cli(tmp_path, path))
    assert "stage1_unit1_bn1_gamma: file (33,) vs model (32,)" in line and path in line, line
    assert "pretrain_strict=false" in line, line


def test_cli_pretrain_strict_false_trains_and_reports(tmp_path):
    path = shapes_backbone_file(tmp_path, drop=("bn0_beta",), reshape=("stage1_unit1_bn1_gamma",))
    proc = run_train_cli(tmp_path, path, "pretrain_strict=false")
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    log = proc.stdout + proc.stderr
    assert "backbone parameters missing in the file" in log and "bn0_beta" in log
    assert "stage1_unit1_bn1_gamma: file" in log
