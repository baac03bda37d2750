"""Pretrained weights from a local .params file: key report, layouts, missing file, shapes."""
import mxnet as mx
import numpy as np
import pytest
from standin_detector import StandInDetector, tiny_config, write_tiny_coco

from simpledet.engine.build import build_dataset, build_train_loader
from simpledet.engine.pretrained import (
    PretrainedError,
    check_pretrained_exists,
    check_shapes,
    load_pretrained,
)
from simpledet.engine.trainer import build_trainer

ARGS = ["stem_conv_weight", "stem_conv_bias", "stem_bn_gamma", "stem_bn_beta", "head_weight"]
AUX = ["stem_bn_moving_mean", "stem_bn_moving_var"]


def write_params(path, payload):
    mx.nd.save(str(path), {k: mx.nd.array(v) for k, v in payload.items()})
    return str(path)


def test_prefixed_file_reports_missing_and_unexpected(tmp_path):
    path = write_params(tmp_path / "r50.params", {
        "arg:stem_conv_weight": np.ones((4, 3, 3, 3)), "arg:stem_bn_gamma": np.ones(4),
        "aux:stem_bn_moving_mean": np.zeros(4), "arg:fc1000_weight": np.ones((10, 4)),
        "aux:other_moving_var": np.ones(2)})
    arg_params, aux_params, report = load_pretrained(path, ARGS, AUX)
    assert sorted(arg_params) == ["stem_bn_gamma", "stem_conv_weight"]
    assert sorted(aux_params) == ["stem_bn_moving_mean"]
    assert report.missing == ["head_weight", "stem_bn_beta", "stem_bn_moving_var",
                              "stem_conv_bias"]
    assert report.unexpected == ["arg:fc1000_weight", "aux:other_moving_var"]
    summary = report.summary()
    assert "loaded 3 parameters" in summary and "fc1000_weight" in summary
    assert "head_weight" in summary


def test_plain_names_go_to_aux_when_the_model_says_so(tmp_path):
    path = write_params(tmp_path / "gluon.params", {
        "stem_conv_weight": np.ones((4, 3, 3, 3)), "stem_bn_moving_var": np.ones(4)})
    arg_params, aux_params, report = load_pretrained(path, ARGS, AUX)
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
        load_pretrained(path, ARGS, AUX)
    check_pretrained_exists(None)  # from scratch: nothing to check


def test_unreadable_file_and_wrong_shapes(tmp_path):
    bad = tmp_path / "bad.params"
    bad.write_bytes(b"not a params file")
    with pytest.raises(PretrainedError, match="not a readable MXNet .params file"):
        load_pretrained(str(bad), ARGS, AUX)
    with pytest.raises(PretrainedError, match=r"stem_conv_weight: file \(4, 3, 1, 1\) vs model "
                                              r"\(4, 3, 3, 3\)"):
        check_shapes({"stem_conv_weight": mx.nd.ones((4, 3, 1, 1))},
                     {"stem_conv_weight": (4, 3, 3, 3)}, "x.params")


def test_trainer_starts_from_the_pretrained_values(tmp_path):
    write_tiny_coco(str(tmp_path), "train", [(40, 56), (56, 40), (30, 44), (44, 60)])
    weight = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    path = write_params(tmp_path / "w.params", {"arg:stem_conv_weight": weight,
                                                "arg:classifier_weight": np.ones((2, 2))})
    cfg = tiny_config(tmp_path, pretrain=path)
    detector = StandInDetector(cfg)
    loader = build_train_loader(cfg, build_dataset(cfg, "train", True).records, detector)
    trainer = build_trainer(cfg, detector, loader, [mx.cpu(0)], max_iter=2, hooks=[])
    trainer.train()
    arg_params, _ = trainer.module.get_params()
    # stem_conv is fixed by the detector's pattern, so it still holds the file's values
    np.testing.assert_array_equal(arg_params["stem_conv_weight"].asnumpy(), weight)
