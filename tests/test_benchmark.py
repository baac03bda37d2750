"""scripts/benchmark.py in tiny mode (128x160, batch 1, 2 timed iterations, 1 thread): the
report's JSON fields, the table, the chart and the operator profile exist and make sense, and
bad options fail with one line and exit code 2; Mask R-CNN's synthetic polygons, its worker and
its GluonCV peer; the peer model of each family. No timing is asserted.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from simpledet.benchmark import report as rep
from simpledet.benchmark.cli import main
from simpledet.benchmark.settings import SettingsError, parse_size

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "benchmark.py")
SHAPES_FPN = os.path.join(REPO, "config", "shapes", "faster_fpn.py")
SHAPES_C4 = os.path.join(REPO, "config", "shapes", "faster_c4.py")
SHAPES_MASK = os.path.join(REPO, "config", "shapes", "mask_fpn.py")
ZOO_FPN = os.path.join(REPO, "config", "faster_r50v1_fpn_1x.py")
ZOO_C4 = os.path.join(REPO, "config", "faster_r50v1c4_c5_512roi_1x.py")
ZOO_MASK = os.path.join(REPO, "config", "mask_r50v1_fpn_1x.py")
TINY = ["--size", "128x160", "--batch", "1", "--iters", "2", "--warmup", "1", "--threads", "1"]
DOCUMENTED = ("train_img_s", "infer_s_per_img", "peak_mem_mb")


def run_benchmark(*args, cwd):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600, check=False)


def check_report(report, peer=True):
    """The documented layout, every number positive."""
    assert set(report) == {"ours", "peer", "speedup_train", "speedup_infer"}
    sides = ("ours", "peer") if peer else ("ours",)
    for side in sides:
        for key in DOCUMENTED + ("train_s_per_iter", "infer_img_s"):
            assert report[side][key] > 0, (side, key)
        assert report[side]["threads"] == 1
    assert report["ours"]["backbone_fpn_s_per_iter"] > 0
    assert report["ours"]["step_over_backbone_fpn"] > 0
    if peer:
        assert report["speedup_train"] > 0 and report["speedup_infer"] > 0
    else:
        assert report["peer"] is None and report["speedup_train"] is None


@pytest.fixture(scope="module")
def fpn_run(tmp_path_factory):
    """One tiny run with the GluonCV peer and every output file (about 20 s on one thread)."""
    out = tmp_path_factory.mktemp("benchmark")
    proc = run_benchmark("--config", SHAPES_FPN, *TINY, "--peer", "gluoncv",
                         "--json", str(out / "report.json"), "--plot", str(out / "report.png"),
                         "--profile", str(out / "profile" / "ops.txt"), cwd=out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, out


def test_json_has_the_documented_fields(fpn_run):
    _, out = fpn_run
    report = json.loads((out / "report.json").read_text())
    check_report(report)
    ours, peer = report["ours"], report["peer"]
    assert (ours["size"], ours["batch"], ours["precision"]) == ([128, 160], 1, "fp32")
    assert peer["model"] == "faster_rcnn_fpn_resnet50_v1b_coco"
    # The peer gets our counts (pre-NMS summed over GluonCV's 5 levels).
    assert peer["options"]["num_sample"] == 64
    assert peer["options"]["rpn_train_pre_nms"] == 5 * 1000


def test_stdout_shows_progress_notes_and_the_table(fpn_run):
    proc, _ = fpn_run
    for needle in ("ours train: warm-up 1/1", "ours train: iteration 2/2",
                   "peer train: iteration 2/2", "backbone+neck fwd+bwd: iteration 1/2",
                   "1 threads", "data loader is not timed", "train img/s", "infer s/img",
                   "peak train memory MB (rss)", "train step / backbone+neck", "faster"):
        assert needle in proc.stdout, needle


def test_plot_and_operator_profile_are_written(fpn_run):
    _, out = fpn_run
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "profile" / "ops.txt").read_text()
    # Symbolic executors' operators, ours included: the profiler was set before binding.
    for op in ("Convolution", "_backward_Convolution", "_contrib_PyramidProposal"):
        assert op in table, op


def test_report_without_peer_has_null_peer_and_renders(tmp_path):
    from types import SimpleNamespace

    from simpledet.benchmark.settings import Device, Settings

    settings = Settings(config="c.py", overrides=(), precision="fp32", batch=2, size=(64, 96),
                        iters=3, warmup=1, threads=1, peer="none", device=Device("cpu", 0))
    cfg = SimpleNamespace(name="c", backbone=SimpleNamespace(normalizer="fixbn",
                                                             arch_name="resnet-v1-50"),
                          neck=SimpleNamespace(type="fpn"),
                          rpn=SimpleNamespace(train_post_nms=2000, test_post_nms=1000))
    results = {"ours": {"train_s_per_iter": 0.5, "train_img_s": 4.0, "infer_s_per_img": 0.1,
                        "infer_img_s": 12.0, "peak_mem_mb": 900.0, "peak_mem_kind": "rss",
                        "nonfinite_steps": 1, "steps_run": 4, "threads": 1},
               "backbone": {"backbone_fpn_s_per_iter": 0.25}}
    report = rep.combine(settings, cfg, results)
    check_report(report, peer=False)
    assert report["ours"]["step_over_backbone_fpn"] == pytest.approx(2.0)
    text = rep.format_report(report)
    assert "fixbn" in text and "1 of 4 training steps had non-finite losses" in text
    rep.write_json(report, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["peer"] is None
    rep.write_plot(report, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 0


@pytest.mark.parametrize("text, expected", [("600x800", (600, 800)), (" 128x160 ", (128, 160))])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["600by800", "600x", "0x800", "-1x5", "600x800x3", ""])
def test_parse_size_rejects_malformed(text):
    with pytest.raises(SettingsError, match="HEIGHTxWIDTH"):
        parse_size(text)


def exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


@pytest.mark.parametrize("argv, needle", [
    (["--config", ZOO_FPN, "--peer", "detectron2"], "--peer 'detectron2'"),
    (["--config", ZOO_FPN, "--size", "600by800"], "--size '600by800'"),
    (["--config", "config/no_such_config.py"], "config file not found"),
    (["--config", ZOO_FPN, "--precision", "fp8"], "--precision"),
    (["--config", ZOO_FPN, "--iters", "0"], "--iters 0"),
    (["--config", ZOO_FPN, "--gpus", "0,1"], "one device"),
    (["--config", ZOO_FPN, "--precision", "fp16"], "precision=fp16 needs GPU"),
    (["--size", "600x800"], "--config"),
])
def test_bad_options_fail_with_one_line_and_exit_2(capsys, argv, needle):
    assert exit_code(argv) == 2
    captured = capsys.readouterr()
    assert needle in captured.err
    assert len(captured.err.strip().splitlines()) == 1, captured.err
    assert "[benchmark] measuring" not in captured.out  # no worker was started


def tiny_config(path, height=64, width=96):
    from simpledet.benchmark.settings import quiet_load_config

    return quiet_load_config(path, ["pretrain=none", f"input.short={min(height, width)}",
                                    f"input.long={max(height, width)}"])


def test_mask_synthetic_batch_has_one_polygon_per_box():
    """gt_polys row g is the ellipse inscribed in gt_boxes row g (its bounding region is the box's
    [x1, x2 + 1) x [y1, y2 + 1)); padding rows are -1; the mask-target op rasterises each row
    inside its box as a 16-gon (area 8 sin(pi / 8) / 4 = 0.765 of the box)."""
    import mxnet as mx

    from simpledet.benchmark import synthetic
    from simpledet.engine.build import build_detector
    from simpledet.ops import mask_target

    cfg = tiny_config(SHAPES_MASK)
    detector = build_detector(cfg)
    bucket = (64, 96)
    sample = synthetic.make_images(2, 64, 96, cfg.num_classes, seed=3)
    batch = synthetic.training_batch(cfg, detector.target_assigners([bucket]), sample, bucket)
    assert batch["gt_polys"].shape == (2, cfg.input.max_num_gt, cfg.mask_target.poly_len)
    vertices, count = synthetic.POLYGON_VERTICES, synthetic.BOXES_PER_IMAGE
    for slot in range(2):
        boxes, polys = batch["gt_boxes"][slot], batch["gt_polys"][slot]
        assert (boxes[:count, 4] >= 1).all() and (boxes[count:] == -1).all()
        assert (polys[count:] == -1).all()
        for row in range(count):
            assert polys[row, :2].tolist() == [1, vertices]
            points = polys[row, 2:2 + 2 * vertices].reshape(-1, 2)
            x1, y1, x2, y2 = boxes[row, :4]
            assert points.min(0) == pytest.approx([x1, y1], abs=1e-3)
            assert points.max(0) == pytest.approx([x2 + 1, y2 + 1], abs=1e-3)
            assert (polys[row, 2 + 2 * vertices:] == -1).all()
        rois = np.concatenate([np.full((count, 1), slot, np.float32), boxes[:count, :4]], 1)
        targets = mask_target(mx.nd.array(rois), mx.nd.arange(count),
                              mx.nd.array(batch["gt_polys"]), mask_size=28).asnumpy()
        area = 8 * np.sin(np.pi / 8) / 4
        assert targets.reshape(count, -1).mean(1) == pytest.approx([area] * count, abs=0.03)


def test_mask_worker_runs_ours(monkeypatch):
    """Our Mask R-CNN worker in this process (64x96, one call each): the train step, the test
    graph and the mask post-processing of test.max_det detections."""
    from simpledet.benchmark import worker
    from simpledet.benchmark.cli import build_parser
    from simpledet.benchmark.settings import resolve_settings

    args = build_parser().parse_args(["--config", SHAPES_MASK, "--size", "64x96", "--batch", "1",
                                      "--iters", "1", "--warmup", "0", "--threads", "1"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    result = worker.run_role("ours", resolve_settings(args))
    for key in ("train_s_per_iter", "infer_s_per_img", "postprocess_s_per_img"):
        assert result[key] > 0, key
    assert result["infer_with_postprocess_s_per_img"] == pytest.approx(
        result["infer_s_per_img"] + result["postprocess_s_per_img"])
    assert result["postprocess_detections"] == 100  # test.max_det: all the fixed detections
    assert result["train_inputs"][-1] == "gt_polys" and result["nonfinite_steps"] == 0


FASTER_FPN_PEER = "faster_rcnn_fpn_resnet50_v1b_coco"
FASTER_C4_PEER = "faster_rcnn_resnet50_v1b_coco"
MASK_FPN_PEER = "mask_rcnn_fpn_resnet50_v1b_coco"


@pytest.mark.parametrize("config, model", [
    (SHAPES_FPN, FASTER_FPN_PEER), (ZOO_FPN, FASTER_FPN_PEER), (SHAPES_C4, FASTER_C4_PEER),
    (ZOO_C4, FASTER_C4_PEER), (SHAPES_MASK, MASK_FPN_PEER), (ZOO_MASK, MASK_FPN_PEER),
])
def test_peer_model_follows_the_config_family(config, model):
    from simpledet.benchmark import gluoncv_peer

    cfg = tiny_config(config, 600, 800)
    assert gluoncv_peer.model_name(cfg) == model
    options = gluoncv_peer.model_options(cfg, 600, 800, 1)
    if model.startswith("mask"):  # masks on as many detections as ours
        assert options["rcnn_max_dets"] == cfg.test.max_det
    else:
        assert "rcnn_max_dets" not in options
    assert options["num_sample"] == cfg.roi_sampler.batch_per_image


def test_a_family_without_peer_is_refused():
    from simpledet.benchmark import gluoncv_peer

    class OtherConfig:
        detector_class = object

    with pytest.raises(SettingsError, match="no GluonCV peer for the detector object"):
        gluoncv_peer.model_name(OtherConfig())


def test_mask_layout_against_gluoncv_mask_rcnn(tmp_path):
    """Mask R-CNN against GluonCV's mask_rcnn_fpn_resnet50_v1b_coco, one warm-up and one timed
    call (about 25 s on one thread): both sides train, infer and post-process."""
    proc = run_benchmark("--config", SHAPES_MASK, *TINY[:4], "--iters", "1", "--warmup", "1",
                         "--threads", "1", "--peer", "gluoncv", "--json",
                         str(tmp_path / "r.json"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    check_report(report)
    peer = report["peer"]
    assert peer["model"] == "mask_rcnn_fpn_resnet50_v1b_coco"
    assert peer["options"]["rcnn_max_dets"] == 100
    for side in ("ours", "peer"):
        assert report[side]["postprocess_s_per_img"] > 0
        assert report[side]["postprocess_detections"] == 100
    for needle in ("peer train: iteration 1/1", "peer post-process: iteration 1/1",
                   "post-process s/img (100 masks)", "infer + post-process s/img",
                   "gt polygons: one 16-vertex ellipse", "the test graph alone on both sides"):
        assert needle in proc.stdout, needle


@pytest.mark.slow
def test_c4_layout_against_gluoncv_c4(tmp_path):
    """The C4 peer (faster_rcnn_resnet50_v1b_coco, res5 on 14x14 RoIs) is slow on one thread:
    about 25 s for one warm-up and one timed call."""
    proc = run_benchmark("--config", SHAPES_C4, *TINY[:4], "--iters", "1", "--warmup", "1",
                         "--threads", "1", "--peer", "gluoncv", "--json",
                         str(tmp_path / "r.json"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    check_report(report)
    assert report["peer"]["model"] == "faster_rcnn_resnet50_v1b_coco"


@pytest.mark.slow
def test_bf16_runs_ours_without_peer(tmp_path):
    proc = run_benchmark("--config", SHAPES_FPN, *TINY, "--precision", "bf16", "--json",
                         str(tmp_path / "r.json"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    check_report(report, peer=False)
    assert report["ours"]["precision"] == "bf16"
