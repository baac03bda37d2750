"""detection_train.py / detection_test.py: fast, short failures before anything is written."""
import os
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO_CONFIG = os.path.join(REPO, "config", "faster_r50v1_fpn_1x.py")


def run(script, *args, cwd):
    start = time.monotonic()
    proc = subprocess.run([sys.executable, os.path.join(REPO, script), *args], cwd=cwd,
                          capture_output=True, check=False, text=True, timeout=60)
    return proc, time.monotonic() - start


def assert_short_error(proc, *needles, max_lines=12):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= max_lines, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, (needle, proc.stderr)


def test_train_without_coco_fails_fast_naming_the_paths(tmp_path):
    proc, seconds = run("detection_train.py", "--config", ZOO_CONFIG, cwd=tmp_path)
    ann = str(tmp_path / "data" / "coco" / "annotations" / "instances_train2017.json")
    images = str(tmp_path / "data" / "coco" / "images" / "train2017")
    assert_short_error(proc, ann, images, "images.cocodataset.org", "make_shapes.py")
    # fails before building a model or a loader (a generous bound: a shared CI machine can
    # take 10 s just to import MXNet)
    assert seconds < 30
    assert not (tmp_path / "experiments").exists()
    assert os.listdir(tmp_path) == []


def test_missing_pretrained_weights_fail_before_the_experiment_dir(tmp_path):
    (tmp_path / "data" / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "data" / "coco" / "annotations" / "instances_train2017.json").write_text("{}")
    (tmp_path / "data" / "coco" / "images" / "train2017").mkdir(parents=True)
    proc, _ = run("detection_train.py", "--config", ZOO_CONFIG, cwd=tmp_path)
    assert_short_error(proc, "pretrain_model/resnet-v1-50-0000.params",
                       "--set pretrain=none")
    assert not (tmp_path / "experiments").exists()


@pytest.mark.parametrize("case", ["missing", "syntax", "bad_key_in_file", "bad_key_in_set"])
def test_config_errors_are_one_screen(tmp_path, case):
    config = tmp_path / "my_config.py"
    args = ["--config", str(config)]
    if case == "missing":
        needles = ["config file not found", str(config)]
    elif case == "syntax":
        config.write_text("from simpledet.config import FasterRcnnConfig\ncfg = "
                          "FasterRcnnConfig(\ncfg.seed = 1\n")
        needles = ["syntax error", "my_config.py"]
    elif case == "bad_key_in_file":
        config.write_text("from simpledet.config import FasterRcnnConfig\n"
                          "cfg = FasterRcnnConfig()\ncfg.rpn.nms_iuo = 0.6\n")
        needles = ["nms_iuo", "nms_iou", "line 3"]
    else:
        config.write_text("from simpledet.config import FasterRcnnConfig\n"
                          "cfg = FasterRcnnConfig()\n")
        args += ["--set", "train.lr_per_16_image=0.01"]
        needles = ["unknown key", "train.lr_per_16_images"]
    proc, _ = run("detection_train.py", *args, cwd=tmp_path)
    assert proc.returncode == 2
    assert_short_error(proc, "config error", *needles)
    assert not (tmp_path / "experiments").exists()


def test_bad_device_option_and_resume_without_checkpoint(tmp_path):
    proc, _ = run("detection_train.py", "--config", ZOO_CONFIG, "--gpus", "0,x", cwd=tmp_path)
    assert_short_error(proc, "--gpus '0,x'")
    root = tmp_path / "d"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_train2017.json").write_text("{}")
    (root / "images" / "train2017").mkdir(parents=True)
    proc, _ = run("detection_train.py", "--config", ZOO_CONFIG, "--resume", "--set",
                  f"dataset.root={root}", cwd=tmp_path)
    assert_short_error(proc, "--resume: no checkpoint in experiments/faster_r50v1_fpn_1x")


def test_test_cli_without_data_or_checkpoint(tmp_path):
    proc, _ = run("detection_test.py", "--config", ZOO_CONFIG, cwd=tmp_path)
    assert_short_error(proc, str(tmp_path / "data" / "coco" / "annotations" /
                                 "instances_val2017.json"))
    root = tmp_path / "d"
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2017.json").write_text("{}")
    (root / "images" / "val2017").mkdir(parents=True)
    proc, _ = run("detection_test.py", "--config", ZOO_CONFIG, "--set", f"dataset.root={root}",
                  cwd=tmp_path)
    assert_short_error(proc, "no checkpoint in experiments/faster_r50v1_fpn_1x/checkpoints")


def test_test_cli_builds_the_model_of_the_saved_experiment_config(tmp_path, caplog):
    from simpledet.config import dump_config, load_config
    from simpledet.engine.cli import config_of_experiment

    config = os.path.join(REPO, "config", "shapes", "faster_fpn.py")
    root = f"output_root={tmp_path}"
    trained = load_config(config, [root, "neck.channels=32", "bbox_head.fc_dim=128"])
    dump_config(trained, trained.experiment_dir)

    from_file = load_config(config, [root, "test.score_thresh=0.2"])
    import logging

    cli_logger = logging.getLogger("simpledet.cli")
    cli_logger.addHandler(caplog.handler)  # the 'simpledet' logger may not propagate
    try:
        used = config_of_experiment(from_file, [root, "test.score_thresh=0.2"])
    finally:
        cli_logger.removeHandler(caplog.handler)
    assert used.neck.channels == 32 and used.bbox_head.fc_dim == 128
    assert used.test.score_thresh == 0.2  # this command's --set still applies
    assert f"neck.channels: {from_file.neck.channels} -> 32" in caplog.text
    assert "bbox_head.fc_dim" in caplog.text

    fresh = load_config(config, [f"output_root={tmp_path / 'none'}"])
    assert config_of_experiment(fresh, []) is fresh  # no saved config: the file's
