"""ONNX export (simpledet.export, scripts/export_onnx.py): each custom op's lowering against the
op itself on the same inputs, then the whole Faster R-CNN test graph exported and run by
onnxruntime against MXNet on the same image."""
import importlib.util
import os
import subprocess
import sys

import mxnet as mx
import numpy as np
import onnx
import pytest

from simpledet.config import load_config
from simpledet.engine.build import build_detector
from simpledet.engine.checkpoint import save_params
from simpledet.export.onnx_export import (
    ExportError,
    compare_detections,
    example_inputs,
    export_detector,
    export_symbol,
    initialized_params,
    mxnet_outputs,
    run_onnx,
)
from simpledet.ops import (
    box_decode,
    detection_postprocess,
    fpn_roi_align,
    pyramid_proposal,
    retina_postprocess,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHAPES = os.path.join(REPO, "config", "shapes")
SHAPES_FPN = os.path.join(SHAPES, "faster_fpn.py")


def _export_and_run(symbol, feed, path):
    """(MXNet outputs, onnxruntime outputs) of a parameter-free symbol on ``feed``."""
    model = export_symbol(symbol, {}, {}, {k: v.shape for k, v in feed.items()}, path)
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    executor = symbol.bind(mx.cpu(), {k: mx.nd.array(v) for k, v in feed.items()})
    reference = [out.asnumpy() for out in executor.forward()]
    return reference, run_onnx(path, feed), model


def _op_types(model):
    return {node.op_type for node in model.graph.node}


# --- one op at a time -------------------------------------------------------------------------

def test_pyramid_proposal_lowering_equals_the_op(tmp_path):
    rng = np.random.RandomState(0)
    strides, batch, height, width = (4, 8, 16, 32, 64), 3, 64, 96
    cls = [mx.sym.var(f"cls{i}") for i in range(len(strides))]
    box = [mx.sym.var(f"box{i}") for i in range(len(strides))]
    rois, scores = pyramid_proposal(cls, box, mx.sym.var("im_info"), feature_strides=strides,
                                    pre_nms_top_n=200, post_nms_top_n=600, nms_threshold=0.7,
                                    min_size=2)
    feed = {}
    for i, stride in enumerate(strides):
        h, w = height // stride, width // stride
        feed[f"cls{i}"] = rng.rand(batch, 3, h, w).astype(np.float32)
        feed[f"box{i}"] = (rng.randn(batch, 12, h, w) * 0.5).astype(np.float32)
    feed["cls0"][1, 0, :3, :3] = np.nan  # dropped by the op
    # image 1: a portrait size with scale 1.5 (min_size 3 px); image 2: min_size 2 * 1000 px
    # keeps nothing, so its rows are [2, 0, 0, 0, 0] with score 0
    feed["im_info"] = np.array([[60, 90, 1.0], [64, 40, 1.5], [64, 96, 1000.]], np.float32)
    reference, exported, model = _export_and_run(mx.sym.Group([rois, scores]), feed,
                                                 str(tmp_path / "proposal.onnx"))
    assert {"TopK", "NonMaxSuppression"} <= _op_types(model)
    assert reference[0].shape == exported[0].shape == (3 * 600, 5)
    np.testing.assert_array_equal(exported[0], reference[0])
    np.testing.assert_array_equal(exported[1], reference[1])
    assert (reference[0][1200:, 1:] == 0).all() and (reference[0][1200:, 0] == 2).all()
    # image 0 keeps fewer than 600 boxes: its rows repeat the kept ones (the op's padding)
    kept = len(np.unique(reference[0][:600], axis=0))
    assert 0 < kept < 600


@pytest.mark.parametrize("aligned,sampling_ratio", [(False, 2), (True, 0)])
def test_fpn_roi_align_lowering_matches_the_op(tmp_path, aligned, sampling_ratio):
    rng = np.random.RandomState(1)
    strides, batch, height, width = (4, 8, 16, 32), 2, 128, 160
    maps = [mx.sym.var(f"p{i}") for i in range(len(strides))]
    symbol = fpn_roi_align(mx.sym.var("rois"), maps, feature_strides=strides,
                           sampling_ratio=sampling_ratio, aligned=aligned)
    feed = {f"p{i}": rng.randn(batch, 8, height // s, width // s).astype(np.float32)
            for i, s in enumerate(strides)}
    n = 300
    x1, y1 = rng.uniform(-10, width, n), rng.uniform(-10, height, n)
    sizes = np.exp(rng.uniform(0, np.log(500), (n, 2)))  # every level, boxes off the map
    rois = np.stack([rng.randint(0, batch, n), x1, y1, x1 + sizes[:, 0], y1 + sizes[:, 1]], 1)
    rois[:4, 0] = -1  # padding rois pool to zeros
    rois[4] = [0, 10, 10, 121, 121]  # sqrt(area) 112 and 224: next to the level boundaries
    rois[5] = [1, 0, 0, 223, 223]
    feed["rois"] = rois.astype(np.float32)
    reference, exported, model = _export_and_run(symbol, feed, str(tmp_path / "align.onnx"))
    assert "RoiAlign" in _op_types(model)
    assert (reference[0][:4] == 0).all()
    np.testing.assert_allclose(exported[0], reference[0], rtol=0, atol=1e-5)


def test_single_map_roi_align_lowering(tmp_path):
    rng = np.random.RandomState(2)
    symbol = fpn_roi_align(mx.sym.var("rois"), [mx.sym.var("c4")], feature_strides=(16,),
                           pooled_size=(14, 14))
    rois = np.array([[0, 3, 5, 200, 150], [0, 50, 60, 52, 61], [0, -20, -20, 400, 400]],
                    np.float32)
    feed = {"c4": rng.randn(1, 4, 16, 20).astype(np.float32), "rois": rois}
    reference, exported, _ = _export_and_run(symbol, feed, str(tmp_path / "c4.onnx"))
    np.testing.assert_allclose(exported[0], reference[0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("class_agnostic", [False, True])
def test_detection_postprocess_lowering_matches_the_op(tmp_path, class_agnostic):
    rng = np.random.RandomState(3)
    batch, rois_per_image, classes, height, width = 2, 300, 7, 128, 160
    n = batch * rois_per_image
    x1, y1 = rng.uniform(0, width, n), rng.uniform(0, height, n)
    rois = np.stack([np.repeat(np.arange(batch), rois_per_image), x1, y1,
                     x1 + rng.uniform(1, 80, n), y1 + rng.uniform(1, 80, n)], 1)
    logits = rng.randn(n, classes) * 2
    prob = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    deltas = rng.randn(n, 4 if class_agnostic else 4 * classes)
    feed = {"rois": rois.astype(np.float32), "cls_prob": prob.astype(np.float32),
            "bbox_pred": deltas.astype(np.float32),
            "im_info": np.array([[height, width, 1], [height - 20, width - 30, 1]], np.float32)}
    symbol = detection_postprocess(*(mx.sym.var(k) for k in feed), max_det=100,
                                   class_agnostic=class_agnostic)
    reference, exported, model = _export_and_run(symbol, feed, str(tmp_path / "post.onnx"))
    assert {"TopK", "NonMaxSuppression"} <= _op_types(model)
    report = compare_detections(reference[0], exported[0])
    assert report["ok"], report
    assert report["detections"] == 200  # both images fill max_det: the ranking is compared

    # nothing above score_thresh: all rows -1
    feed["cls_prob"][:, 1:] = 0.01
    reference, exported, _ = _export_and_run(symbol, feed, str(tmp_path / "empty.onnx"))
    assert (reference[0] == -1).all()
    np.testing.assert_array_equal(exported[0], reference[0])


def test_retina_postprocess_lowering_equals_the_op(tmp_path):
    rng = np.random.RandomState(4)
    strides, batch, height, width, classes, anchors = (8, 16, 32), 2, 64, 96, 4, 9
    cls = [mx.sym.var(f"cls{i}") for i in range(len(strides))]
    box = [mx.sym.var(f"box{i}") for i in range(len(strides))]
    symbol = retina_postprocess(cls, box, mx.sym.var("im_info"), feature_strides=strides,
                                pre_nms_top_n=100, max_det=50, score_thresh=0.3,
                                bbox_stds=(0.1, 0.1, 0.2, 0.2))
    feed = {}
    for i, stride in enumerate(strides):
        h, w = height // stride, width // stride
        feed[f"cls{i}"] = (rng.rand(batch, anchors * classes, h, w) * 0.6).astype(np.float32)
        feed[f"box{i}"] = rng.randn(batch, 4 * anchors, h, w).astype(np.float32)
    feed["cls2"][1] = 0.1  # below score_thresh: level 2 gives image 1 no candidate
    feed["im_info"] = np.array([[60, 90, 1], [64, 50, 1]], np.float32)
    reference, exported, model = _export_and_run(symbol, feed, str(tmp_path / "retina.onnx"))
    assert {"TopK", "NonMaxSuppression"} <= _op_types(model)
    assert (reference[0][..., 5] >= 1).sum() == 100  # both images fill max_det
    np.testing.assert_array_equal(exported[0], reference[0])


def test_box_decode_and_pick_lowerings_match_mxnet(tmp_path):
    rng = np.random.RandomState(5)
    rois = np.stack([np.array([0, 1, 1, -1, 0.5, 2]), rng.uniform(0, 50, 6),
                     rng.uniform(0, 50, 6), rng.uniform(60, 120, 6), rng.uniform(60, 120, 6)],
                    1).astype(np.float32)  # rows 3-5: padding / non-integer / out of batch
    feed = {"rois": rois, "deltas": rng.randn(6, 4).astype(np.float32),
            "im_info": np.array([[100, 90, 1], [80, 110, 1]], np.float32)}
    symbol = box_decode(*(mx.sym.var(k) for k in ("rois", "deltas", "im_info")))
    reference, exported, _ = _export_and_run(symbol, feed, str(tmp_path / "decode.onnx"))
    np.testing.assert_array_equal(exported[0][3:], rois[3:])
    np.testing.assert_allclose(exported[0], reference[0], rtol=1e-6, atol=1e-4)

    data = rng.randn(5, 4, 3).astype(np.float32)
    index = np.array([[0, 3, 1], [2, 2, 2], [5, -2, 1], [1, 0, 3], [3, 3, 0]], np.float32)
    for mode in ("clip", "wrap"):
        symbol = mx.sym.pick(mx.sym.var("data"), mx.sym.var("index"), axis=1, mode=mode)
        reference, exported, _ = _export_and_run(symbol, {"data": data, "index": index},
                                                 str(tmp_path / f"pick_{mode}.onnx"))
        np.testing.assert_array_equal(exported[0], reference[0])


# --- the whole test graph ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def faster_fpn():
    cfg = load_config(SHAPES_FPN, [])
    detector = build_detector(cfg)
    shapes = detector.test_data_shapes(1, 256, 320)
    arg_params, aux_params = initialized_params(detector, shapes)
    return cfg, detector, shapes, arg_params, aux_params


def test_faster_fpn_onnx_detections_match_mxnet(tmp_path, faster_fpn):
    cfg, detector, shapes, arg_params, aux_params = faster_fpn
    path = str(tmp_path / "faster_fpn.onnx")
    _, model = export_detector(detector, arg_params, aux_params, path, bucket=(256, 320))
    assert [i.name for i in model.graph.input] == ["data", "im_info"]
    assert [o.name for o in model.graph.output] == ["dets"]
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    assert {"RoiAlign", "NonMaxSuppression", "TopK", "Conv"} <= _op_types(model)

    inputs = example_inputs(cfg, shapes)
    assert inputs["im_info"][0, 2] != 1.0  # the image was resized
    reference = mxnet_outputs(detector, arg_params, aux_params, inputs)[0]
    exported = run_onnx(path, inputs)[0]
    report = compare_detections(reference, exported)
    assert report["ok"], report
    assert report["detections"] >= 20
    # the comparison can fail: a moved box or a changed class is caught
    moved = exported.copy()
    moved[0, 0, 2] *= 1.01
    assert not compare_detections(reference, moved)["ok"]
    relabelled = exported.copy()
    relabelled[0, 1, 5] = relabelled[0, 1, 5] % 6 + 1
    assert not compare_detections(reference, relabelled)["ok"]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["faster_c4", "mask_fpn", "cascade_fpn", "retina_fpn"])
def test_every_family_exports_with_mxnet_parity(tmp_path, config):
    cfg = load_config(os.path.join(SHAPES, f"{config}.py"), [])
    detector = build_detector(cfg)
    shapes = detector.test_data_shapes(1, 256, 320)
    arg_params, aux_params = initialized_params(detector, shapes)
    if "retina_cls_logit_bias" in arg_params:
        # the prior bias puts every initial score under score_thresh; spread the logits so
        # that the scores are far apart compared with float rounding
        arg_params["retina_cls_logit_bias"][:] = 0
        arg_params["retina_cls_logit_weight"][:] *= 100
    path = str(tmp_path / f"{config}.onnx")
    _, model = export_detector(detector, arg_params, aux_params, path, bucket=(256, 320))
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    inputs = example_inputs(cfg, shapes)
    reference = mxnet_outputs(detector, arg_params, aux_params, inputs)
    exported = run_onnx(path, inputs)
    report = compare_detections(reference[0], exported[0])
    assert report["ok"] and report["detections"] >= 20, report
    for ref, got in zip(reference[1:], exported[1:]):  # Mask R-CNN's masks
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)


def test_unsupported_graphs_fail_with_a_named_reason(tmp_path, faster_fpn):
    _, detector, _, arg_params, aux_params = faster_fpn
    with pytest.raises(ExportError, match="lack"):
        export_detector(detector, {}, {}, str(tmp_path / "x.onnx"), bucket=(256, 320))
    data = mx.sym.var("data")
    symbol = mx.sym.contrib.ROIAlign(data, mx.sym.var("rois"), pooled_size=(2, 2),
                                     spatial_scale=1.0, position_sensitive=True)
    with pytest.raises(ExportError, match="position_sensitive"):
        export_symbol(symbol, {}, {}, {"data": (1, 4, 8, 8), "rois": (2, 5)},
                      str(tmp_path / "y.onnx"))
    with pytest.raises(ExportError, match="precision"):
        fp16 = build_detector(load_config(SHAPES_FPN, ["precision=bf16"]))
        export_detector(fp16, arg_params, aux_params, str(tmp_path / "z.onnx"))


# --- the CLI ----------------------------------------------------------------------------------

def _run_cli(*args, cwd):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, os.path.join(REPO, "scripts", "export_onnx.py"),
                           "--config", SHAPES_FPN, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_cli_exports_a_params_file_and_verifies(tmp_path, faster_fpn):
    _, _, _, arg_params, aux_params = faster_fpn
    save_params(tmp_path / "model.params", arg_params, aux_params)
    out = tmp_path / "out" / "model.onnx"
    proc = _run_cli("--params", str(tmp_path / "model.params"), "--out", str(out), "--verify",
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "dets (1, 100, 6)" in proc.stdout and "same classes: True" in proc.stdout
    onnx.checker.check_model(onnx.load(str(out)))
    assert not (tmp_path / "experiments").exists()


def _cli_main():
    spec = importlib.util.spec_from_file_location(
        "export_onnx_cli", os.path.join(REPO, "scripts", "export_onnx.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_defaults_to_the_saved_config_and_latest_checkpoint(tmp_path, monkeypatch, capsys,
                                                                faster_fpn):
    from simpledet.config import dump_config
    from simpledet.engine.checkpoint import save_checkpoint

    _, _, _, arg_params, aux_params = faster_fpn
    monkeypatch.chdir(tmp_path)
    trained = load_config(SHAPES_FPN, ["test.max_det=40"])  # what the run was trained with
    dump_config(trained, trained.experiment_dir)
    for iteration in (10, 20):
        save_checkpoint(trained.experiment_dir, iteration, arg_params, aux_params, {})
    out = tmp_path / "model.onnx"
    code = _cli_main()(["--config", SHAPES_FPN, "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    assert "(iteration 20)" in stdout
    assert "dets (1, 40, 6)" in stdout  # the saved config's test.max_det, not the file's 100
    dims = onnx.load(str(out)).graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 40, 6]
    assert _cli_main()(["--config", SHAPES_FPN, "--out", str(out), "--iter", "10"]) == 0
    assert "(iteration 10)" in capsys.readouterr().out


@pytest.mark.parametrize("args,needle", [
    ((), "no checkpoint in experiments/faster_fpn/checkpoints"),
    (("--params", "missing.params"), "--params file not found"),
    (("--init", "--bucket", "250", "320"), "multiples of 32"),
    (("--init", "--set", "precision=bf16"), "export the fp32 graph"),
])
def test_cli_errors_are_one_line(tmp_path, monkeypatch, capsys, args, needle):
    monkeypatch.chdir(tmp_path)
    code = _cli_main()(["--config", SHAPES_FPN, "--out", str(tmp_path / "m.onnx"), *args])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert err.strip().splitlines() == [f"error: {err.strip().partition('error: ')[2]}"], err
    assert needle in err
    assert not (tmp_path / "m.onnx").exists()


def test_export_extra_is_pinned_installed_and_part_of_test():
    import tomllib

    import onnxruntime

    extras = tomllib.loads(open(os.path.join(REPO, "pyproject.toml")).read())[
        "project"]["optional-dependencies"]
    assert extras["export"] == ["onnx==1.23.2", "onnxruntime==1.32.0"]
    assert "simpledet[export]" in extras["test"]
    assert (onnx.__version__, onnxruntime.__version__) == ("1.23.2", "1.32.0")
    assert np.__version__ == "1.23.5"  # mxnet 1.9.1 breaks on numpy >= 1.24
