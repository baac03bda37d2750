"""simpledet.engine.inference: single-image preprocessing equals the test loader's batch, and
parameter files that do not fit are one error naming the file and the parameter."""
from pathlib import Path

import cv2
import mxnet as mx
import numpy as np
import pytest

from simpledet.config import load_config
from simpledet.engine.build import build_test_loader
from simpledet.engine.checkpoint import save_checkpoint, save_params
from simpledet.engine.inference import WeightsError, check_weights, load_weights, preprocess

REPO = Path(__file__).resolve().parents[2]


# the short side limits the scale of the near-square ones, the long side of the others
@pytest.mark.parametrize("hw", [(203, 131), (45, 70), (600, 900), (100, 110), (117, 100)])
def test_preprocess_equals_the_test_loader(tmp_path, hw):
    cfg = load_config(str(REPO / "config" / "shapes" / "faster_fpn.py"),
                      ["input.short=64", "input.long=80", "test.images_per_device=1"])
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(*hw, 3), dtype=np.uint8)
    path = tmp_path / "image.png"
    cv2.imwrite(str(path), pixels)
    record = {"image_id": 1, "file_name": str(path), "height": hw[0], "width": hw[1],
              "boxes": np.zeros((0, 4), np.float32), "classes": np.zeros(0, np.int32)}
    loader = build_test_loader(cfg, [record], num_workers=0)
    try:
        (batch,) = list(loader)
    finally:
        loader.close()
    ours = preprocess(pixels[:, :, ::-1], cfg)  # RGB, as decode_image_file gives it
    assert ours["data"].shape == batch["data"].shape
    assert ours["data"].shape[2:] == ((96, 64) if hw[0] > hw[1] else (64, 96))
    np.testing.assert_allclose(ours["data"], batch["data"], rtol=0, atol=1e-5)
    np.testing.assert_array_equal(ours["im_info"], batch["im_info"])


def small_graph():
    data = mx.sym.var("data")
    conv = mx.sym.Convolution(data, num_filter=4, kernel=(3, 3), pad=(1, 1), name="conv")
    return mx.sym.BatchNorm(conv, name="bn"), {"data": (1, 3, 8, 8)}


def good_params():
    arg = {"conv_weight": mx.nd.ones((4, 3, 3, 3)), "conv_bias": mx.nd.zeros(4),
           "bn_gamma": mx.nd.ones(4), "bn_beta": mx.nd.zeros(4)}
    aux = {"bn_moving_mean": mx.nd.zeros(4), "bn_moving_var": mx.nd.ones(4)}
    return arg, aux


def test_check_weights_keeps_the_graphs_parameters_and_moves_plain_aux_names():
    symbol, shapes = small_graph()
    arg, aux = good_params()
    plain = dict(arg, **aux, extra_weight=mx.nd.zeros(2))  # a file without arg:/aux: prefixes
    args, auxs = check_weights(symbol, shapes, plain, {}, "f.params")
    assert sorted(args) == sorted(arg) and sorted(auxs) == sorted(aux)


def test_check_weights_names_the_missing_and_misshapen_parameters():
    symbol, shapes = small_graph()
    arg, aux = good_params()
    del arg["bn_gamma"]
    with pytest.raises(WeightsError, match=r"^f\.params: lacks 1 of the test graph's 6 "
                                           r"parameters, e\.g\. \['bn_gamma'\]"):
        check_weights(symbol, shapes, arg, aux, "f.params")
    arg, aux = good_params()
    arg["conv_weight"] = mx.nd.ones((4, 3, 1, 1))
    with pytest.raises(WeightsError, match=r"conv_weight \(4, 3, 1, 1\) \(the graph wants "
                                           r"\(4, 3, 3, 3\)\)"):
        check_weights(symbol, shapes, arg, aux, "f.params")


def test_load_weights_from_a_file_a_checkpoint_folder_or_the_experiment(tmp_path):
    arg, aux = good_params()
    save_params(tmp_path / "model.params", arg, aux)
    loaded_arg, loaded_aux, source = load_weights(None, params_file=tmp_path / "model.params")
    assert sorted(loaded_arg) == sorted(arg) and sorted(loaded_aux) == sorted(aux)
    assert source == str(tmp_path / "model.params")
    folder = save_checkpoint(tmp_path / "exp", 7, arg, aux, state={})
    assert load_weights(None, params_file=folder)[2] == str(Path(folder) / "model.params")
    _, _, source = load_weights(tmp_path / "exp")
    assert source.endswith("iter_0000007 (iteration 7)")


def test_unreadable_parameter_files_are_one_error_naming_them(tmp_path):
    missing = tmp_path / "missing.params"
    with pytest.raises(WeightsError, match=f"^{missing}: parameter file not found$"):
        load_weights(None, params_file=missing)
    junk = tmp_path / "junk.params"
    junk.write_bytes(b"not an NDArray file" * 10)
    with pytest.raises(WeightsError, match=f"^{junk}: cannot load parameters"):
        load_weights(None, params_file=junk)
