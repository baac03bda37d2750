"""scripts/benchmark.py in tiny mode (128x160, batch 1, 2 timed iterations, 1 thread): the
report's JSON fields, the table, the chart and the operator profile exist and make sense, and
bad options fail with one line and exit code 2. No timing is asserted.
"""
import json
import os
import subprocess
import sys

import pytest

from simpledet.benchmark import report as rep
from simpledet.benchmark.cli import main
from simpledet.benchmark.settings import SettingsError, parse_size

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "benchmark.py")
SHAPES_FPN = os.path.join(REPO, "config", "shapes", "faster_fpn.py")
SHAPES_C4 = os.path.join(REPO, "config", "shapes", "faster_c4.py")
ZOO_FPN = os.path.join(REPO, "config", "faster_r50v1_fpn_1x.py")
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
