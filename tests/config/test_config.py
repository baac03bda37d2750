"""Tests of the config system: schema checks, file loading, --set, derived values, dump, diff."""
import pickle
import runpy
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from simpledet.config import (
    ConfigError,
    FasterRcnnConfig,
    Section,
    apply_overrides,
    config_to_python,
    diff_configs,
    dump_config,
    exit_on_config_error,
    field,
    load_config,
    parse_override,
)
from simpledet.config.faster_rcnn import RpnConfig
from simpledet.config.schema import positive

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "config"
ZOO_CONFIGS = sorted(p for p in CONFIG_DIR.rglob("*.py") if "_base" not in p.parts)
R50_FPN = CONFIG_DIR / "faster_r50v1_fpn_1x.py"
R101_FPN = CONFIG_DIR / "faster_r101v1_fpn_1x.py"


@pytest.fixture
def config_dir(tmp_path):
    """A config folder in tmp_path with the real bases, for writing broken leaves."""
    shutil.copytree(CONFIG_DIR / "_base", tmp_path / "_base")
    return tmp_path


def write_leaf(folder, name, *body_lines):
    path = folder / name
    path.write_text("\n".join(["from _base.faster_fpn import faster_fpn", "",
                               "cfg = faster_fpn()", *body_lines, ""]))
    return path


def assert_short(err):
    text = str(err)
    assert len(text.splitlines()) <= 3, text
    assert "Traceback" not in text


# --- every config of the zoo ----------------------------------------------------------------

def test_zoo_is_present():
    names = {p.stem for p in ZOO_CONFIGS}
    assert {"faster_r50v1_fpn_1x", "faster_r101v1_fpn_1x", "faster_r50v1b_fpn_1x",
            "faster_r50v1c4_c5_512roi_1x", "faster_r50v2c4_c5_256roi_1x"} <= names


@pytest.mark.parametrize("path", ZOO_CONFIGS, ids=lambda p: str(p.relative_to(CONFIG_DIR)))
def test_every_config_loads_resolves_and_round_trips(path, tmp_path):
    cfg = load_config(path)
    assert cfg.is_frozen
    assert cfg.name == path.stem
    derived = cfg.derived()
    assert derived["lr"] > 0 and derived["max_iter"] > max(derived["lr_steps"], default=0)
    py_path, json_path = dump_config(cfg, tmp_path / cfg.name)
    for dumped in (py_path, json_path):
        reloaded = load_config(dumped)
        assert reloaded == cfg, diff_configs(cfg, reloaded)
        assert reloaded.derived() == derived


def test_zoo_values_mirror_simpledet():
    fpn = load_config(R50_FPN)
    assert fpn.rpn.anchor_scales == (8.0,) and fpn.rpn.anchor_ratios == (0.5, 1.0, 2.0)
    assert fpn.rpn_feature_strides == (4, 8, 16, 32, 64)
    assert fpn.roi_feature_strides == (4, 8, 16, 32)
    assert (fpn.rpn.train_pre_nms, fpn.rpn.train_post_nms) == (2000, 2000)
    assert (fpn.rpn.test_pre_nms, fpn.rpn.test_post_nms) == (1000, 1000)
    assert (fpn.rpn.batch_per_image, fpn.rpn.fg_fraction) == (256, 0.5)
    assert (fpn.rpn.pos_iou, fpn.rpn.neg_iou) == (0.7, 0.3)
    assert (fpn.roi_sampler.batch_per_image, fpn.roi_sampler.fg_fraction) == (512, 0.25)
    assert (fpn.input.short, fpn.input.long) == (800, 1333)
    assert (fpn.train.momentum, fpn.train.weight_decay, fpn.train.warmup_iters) == (0.9, 1e-4, 500)
    assert (fpn.test.score_thresh, fpn.test.nms_iou, fpn.test.max_det) == (0.05, 0.5, 100)
    assert fpn.backbone.normalizer == "fixbn" and fpn.bbox_head.type == "2mlp"
    assert fpn.num_classes == 81
    assert fpn.pretrain_path == "pretrain_model/resnet-v1-50-0000.params"

    c4 = load_config(CONFIG_DIR / "faster_r50v1c4_c5_512roi_1x.py")
    assert c4.rpn_feature_strides == (16,) and c4.bbox_head.type == "c5"
    assert c4.rpn.num_anchors == 15 and c4.roi_sampler.batch_per_image == 512
    v2 = load_config(CONFIG_DIR / "faster_r50v2c4_c5_256roi_1x.py")
    assert v2.roi_sampler.batch_per_image == 256
    assert v2.backbone.pixel_mean == (0.0, 0.0, 0.0)  # MXNet v2 normalizes inside the net
    assert load_config(CONFIG_DIR / "faster_r50v1b_fpn_1x.py").backbone.pixel_std[0] > 50


def test_pixel_stats_override_the_variants_normalization():
    """GluonCV resnet*_v1 weights: variant v1 (MSRA layout) on ImageNet mean/std pixels."""
    fpn = load_config(R50_FPN)
    assert fpn.backbone.pixel_stats == "auto" and fpn.backbone.pixel_std == (1.0, 1.0, 1.0)
    gluon_v1 = load_config(R50_FPN, ["backbone.pixel_stats=imagenet"])
    assert gluon_v1.backbone.variant == "v1"
    assert gluon_v1.backbone.pixel_mean == pytest.approx((123.675, 116.28, 103.53))
    assert gluon_v1.backbone.pixel_std == pytest.approx((58.395, 57.12, 57.375))
    raw = load_config(R50_FPN, ["backbone.pixel_stats=raw"]).backbone
    assert raw.pixel_mean == (0.0, 0.0, 0.0) and raw.pixel_std == (1.0, 1.0, 1.0)
    with pytest.raises(ConfigError, match="backbone.pixel_stats"):
        load_config(R50_FPN, ["backbone.pixel_stats=bgr"])


# --- misspelled keys --------------------------------------------------------------------------

def test_misspelled_key_in_file_names_key_suggestion_file_and_line(config_dir):
    path = write_leaf(config_dir, "typo.py", "cfg.backbone.depth = 101", "cfg.rpn.nms_iuo = 0.6")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.key == "rpn.nms_iuo" and "'rpn.nms_iou'" in err.suggestion
    assert err.file.endswith("typo.py") and err.line == 5
    assert "cfg.rpn.nms_iuo = 0.6" in str(err) and "line 5" in str(err)
    assert_short(err)


def test_misspelled_key_via_set_suggests_full_dotted_key():
    with pytest.raises(ConfigError) as info:
        load_config(R50_FPN, ["rpn.nms_iuo=0.6"])
    assert "'rpn.nms_iuo'" in str(info.value) and "did you mean 'rpn.nms_iou'" in str(info.value)
    with pytest.raises(ConfigError) as info:  # the right name in the wrong section
        load_config(R50_FPN, ["anchor_scales=(4,)"])
    assert "did you mean 'rpn.anchor_scales'" in str(info.value)
    with pytest.raises(ConfigError, match="did you mean 'backbone.depth'"):
        load_config(R50_FPN, ["backbon.depth=101"])


def test_misspelled_key_in_code_on_write_read_and_construction():
    cfg = FasterRcnnConfig()
    with pytest.raises(ConfigError, match=r"unknown key 'train.momentun'.*'train.momentum'"):
        cfg.train.momentun = 0.8
    with pytest.raises(AttributeError, match="did you mean 'rpn.num_anchors'"):
        cfg.rpn.num_anchor  # noqa: B018 (a read in a builder)
    with pytest.raises(ConfigError, match="did you mean 'rpn.batch_per_image'"):
        FasterRcnnConfig(rpn={"batch_per_imag": 128})
    assert not hasattr(cfg.rpn, "nms_threshold")


# --- types and values -------------------------------------------------------------------------

@pytest.mark.parametrize("key, value, expected", [
    ("rpn.nms_iou", "high", "float"),
    ("backbone.depth", 77, "one of 18, 34, 50, 101, 152"),
    ("train.images_per_device", 2.5, "int"),
    ("train.images_per_device", True, "int"),  # bools are not ints here
    ("input.flip", 1, "bool"),
    ("bbox_head.reg_std", (0.1, 0.2), "tuple[float, float, float, float]"),
    ("runtime.device_ids", (0, "1"), "tuple[int, ...]"),
    ("neck.type", "FPN", "one of 'fpn', 'none'"),
])
def test_wrong_type_names_key_expected_type_and_value(key, value, expected):
    with pytest.raises(ConfigError) as info:
        FasterRcnnConfig().set(key, value)
    text = str(info.value)
    assert f"'{key}'" in text and expected in text and repr(value) in text


def test_wrong_type_in_file_and_via_set(config_dir):
    path = write_leaf(config_dir, "badtype.py", 'cfg.train.lr_per_16_images = "0.02"')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "'train.lr_per_16_images' expects float, got '0.02' (str)" in str(info.value)
    assert info.value.line == 4
    with pytest.raises(ConfigError, match=r"'rpn.nms_iou' expects float, got 'abc'"):
        load_config(R50_FPN, ["rpn.nms_iou=abc"])


def test_value_rules_and_cross_field_rules():
    cfg = FasterRcnnConfig()
    with pytest.raises(ConfigError, match=r"'rpn.fg_fraction' must be in \[0, 1\], got 1.5"):
        cfg.rpn.fg_fraction = 1.5
    with pytest.raises(ConfigError, match="'train.lr_steps_at_batch16' must be strictly"):
        cfg.train.lr_steps_at_batch16 = (80000, 60000)
    with pytest.raises(ConfigError, match="'rpn.neg_iou'"):
        load_config(R50_FPN, ["rpn.neg_iou=0.8"])
    with pytest.raises(ConfigError, match=r"'bbox_head.type' is 'c5' but neck.type 'fpn'"):
        load_config(R50_FPN, ["bbox_head.type=c5"])
    with pytest.raises(ConfigError, match="'backbone.resnext_groups' only applies"):
        load_config(R50_FPN, ["backbone.resnext_groups=64"])
    with pytest.raises(ConfigError, match="at or after train.iters_at_batch16"):
        load_config(R50_FPN, ["train.iters_at_batch16=70000"])
    with pytest.raises(ConfigError, match="'dataset.val_split' does not apply to synthetic"):
        load_config(R50_FPN, ["dataset.synthetic=shapes", "dataset.val_split=train"])
    cfg.rpn.allowed_border = -1  # keep every anchor (detectron2)
    with pytest.raises(ConfigError, match=r"'rpn.allowed_border' must be >= 0, or -1 .*got -2"):
        cfg.rpn.allowed_border = -2


def test_crowd_fields_are_validated_and_none_or_zero_turn_the_crowd_input_off():
    from simpledet.detectors import FasterRcnn

    cfg = load_config(R50_FPN)
    assert cfg.roi_sampler.crowd_iof == 0.7 and cfg.input.max_num_crowd == 16
    with pytest.raises(ConfigError, match=r"'roi_sampler.crowd_iof' must be in \[0, 1\], got 1.5"):
        load_config(R50_FPN, ["roi_sampler.crowd_iof=1.5"])
    with pytest.raises(ConfigError, match=r"'roi_sampler.crowd_iof' expects float or None"):
        load_config(R50_FPN, ["roi_sampler.crowd_iof=high"])
    with pytest.raises(ConfigError, match="did you mean 'roi_sampler.crowd_iof'"):
        load_config(R50_FPN, ["roi_sampler.crowd_iou=0.7"])
    with pytest.raises(ConfigError, match=r"'input.max_num_crowd' must be > 0, got 0"):
        load_config(R50_FPN, ["input.max_num_crowd=0"])
    assert load_config(R50_FPN, ["input.max_num_crowd=4"]).input.max_num_crowd == 4
    for value, on in (("none", False), ("0", False), ("0.0", False), ("1", True), ("0.5", True)):
        cfg = load_config(R50_FPN, [f"roi_sampler.crowd_iof={value}"])
        detector = FasterRcnn(cfg)
        assert detector.uses_crowd is on, value
        assert ("gt_crowd" in detector.train_data_names) is on
        assert [type(a).__name__ for a in detector.target_assigners()][1:] == (
            ["CrowdRegionAssigner"] if on else [])


# --- derived values ---------------------------------------------------------------------------

@pytest.mark.parametrize("devices, per_device, machines, lr, steps, max_iter", [
    ((0, 1, 2, 3, 4, 5, 6, 7), 2, 1, 0.02, (60000, 80000), 90000),
    ((0,), 2, 1, 0.0025, (480000, 640000), 720000),
    ((0, 1, 2, 3), 2, 4, 0.04, (30000, 40000), 45000),
])
def test_lr_and_schedule_follow_total_batch(devices, per_device, machines, lr, steps, max_iter):
    cfg = load_config(R50_FPN, [f"runtime.device_ids={list(devices)}",
                                f"train.images_per_device={per_device}",
                                f"runtime.num_machines={machines}",
                                "runtime.kvstore=dist_sync" if machines > 1 else "seed=0"])
    assert cfg.total_batch == len(devices) * per_device * machines
    assert cfg.lr == pytest.approx(lr)
    assert cfg.lr_steps == steps and cfg.max_iter == max_iter
    assert cfg.train.warmup_iters == 500  # warmup is in actual iterations, not rescaled
    assert cfg.warmup_lr == pytest.approx(lr / 3)


def test_num_classes_and_strides_are_derived():
    cfg = FasterRcnnConfig()
    cfg.dataset.class_names = ("circle", "square", "triangle")
    assert cfg.num_classes == 4 and cfg.dataset.num_classes == 4
    cfg.neck.type, cfg.bbox_head.type = "none", "c5"
    assert cfg.rpn_feature_strides == (16,)
    cfg.dataset.train_ann_file = "/data/shapes/train.json"
    assert cfg.dataset.train_annotations == "/data/shapes/train.json"
    assert cfg.dataset.val_annotations == "data/coco/annotations/instances_val2017.json"


def test_derived_values_cannot_be_set(config_dir):
    with pytest.raises(ConfigError, match="'lr' is derived.*lr_per_16_images"):
        FasterRcnnConfig().lr = 0.1
    with pytest.raises(ConfigError, match="'dataset.num_classes' is derived"):
        load_config(R50_FPN, ["dataset.num_classes=3"])
    path = write_leaf(config_dir, "derived.py", "cfg.max_iter = 100")
    with pytest.raises(ConfigError, match="'max_iter' is derived"):
        load_config(path)


# --- --set ------------------------------------------------------------------------------------

def test_set_overrides_nested_fields_with_literal_parsing():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cfg = load_config(R50_FPN, ["rpn.nms_iou=0.6", "runtime.device_ids=[0, 1]",
                                    "pretrain=none", "name=123", "input.flip=false",
                                    "train.clip_gradient=10", "backbone={'depth': 101}",
                                    "neck.type=fpn"])
    assert cfg.rpn.nms_iou == 0.6 and cfg.runtime.device_ids == (0, 1)
    assert cfg.pretrain is None and cfg.pretrain_path is None
    assert any("fixbn" in str(w.message) for w in caught)  # frozen BN without weights: warned
    assert cfg.name == "123" and cfg.input.flip is False
    assert cfg.train.clip_gradient == 10.0 and isinstance(cfg.train.clip_gradient, float)
    assert cfg.backbone.depth == 101 and cfg.backbone.variant == "v1"  # other fields kept
    assert load_config(R50_FPN, ["pretrain=/w/r50.params"]).pretrain_path == "/w/r50.params"


def test_parse_override():
    assert parse_override("a.b=(1, 2)") == ("a.b", (1, 2))
    assert parse_override(" a = x=y ") == ("a", "x=y")
    assert parse_override("a=None") == ("a", None)
    assert parse_override("a=True") == ("a", True)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_override("rpn.nms_iou")


def test_loaded_config_is_frozen_and_copy_is_not():
    cfg = load_config(R50_FPN)
    with pytest.raises(ConfigError, match="'rpn.nms_iou': the config is frozen"):
        cfg.rpn.nms_iou = 0.5
    unpickled = pickle.loads(pickle.dumps(cfg))  # loader worker processes may get a copy
    assert unpickled == cfg and unpickled.is_frozen
    clone = cfg.copy()
    clone.rpn.nms_iou = 0.5
    apply_overrides(clone, ["test.max_det=50"])
    assert clone.test.max_det == 50 and cfg.rpn.nms_iou == 0.7


# --- dump and diff ----------------------------------------------------------------------------

def test_dump_is_stable_and_reloads(tmp_path):
    cfg = load_config(R50_FPN, ["train.images_per_device=1", "dataset.class_names=('a', 'b')"])
    text = config_to_python(cfg)
    assert text == config_to_python(load_config(R50_FPN, ["train.images_per_device=1",
                                                          "dataset.class_names=('a', 'b')"]))
    assert "cfg.train.images_per_device = 1\n" in text and "# lr = 0.01\n" in text
    assert max(len(line) for line in text.splitlines()) <= 100
    py_path, json_path = dump_config(cfg, tmp_path / "exp")
    assert load_config(py_path) == cfg and load_config(json_path).num_classes == 3
    assert sorted(p.name for p in (tmp_path / "exp").iterdir()) == ["config.json", "config.py"]


def test_diff_configs_lists_fields_then_derived():
    a, b = load_config(R50_FPN), load_config(R101_FPN)
    fields = [(d.key, d.a, d.b) for d in diff_configs(a, b) if not d.derived]
    assert fields == [("name", "faster_r50v1_fpn_1x", "faster_r101v1_fpn_1x"),
                      ("backbone.depth", 50, 101)]
    derived = {d.key for d in diff_configs(a, b) if d.derived}
    assert derived == {"pretrain_path", "experiment_dir", "backbone.arch_name"}
    assert diff_configs(a, a) == []


def test_config_diff_script_prints_differing_keys():
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "config_diff.py"), str(R50_FPN),
         str(CONFIG_DIR / "faster_r50v1c4_c5_512roi_1x.py")],
        capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "neck.type: 'fpn' -> 'none'" in lines
    assert "bbox_head.type: '2mlp' -> 'c5'" in lines
    assert "rpn.anchor_scales: (8.0,) -> (2.0, 4.0, 8.0, 16.0, 32.0)" in lines
    assert "rpn_feature_strides (derived): (4, 8, 16, 32, 64) -> (16,)" in lines
    assert not any(line.startswith("backbone.depth") for line in lines)


def test_config_diff_script_reports_config_errors(capsys):
    script = runpy.run_path(str(REPO / "scripts" / "config_diff.py"), run_name="config_diff")
    with pytest.raises(SystemExit) as info:
        script["main"]([str(R50_FPN), str(CONFIG_DIR / "faster_r50v1_fpn_2x.py")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("config error: config file not found") and "faster_r50v1_fpn_1x" in err
    assert script["main"]([str(R50_FPN), str(R101_FPN), "--fields-only",
                           "--set-b", "backbone.depth=50"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[2:] == ["name: 'faster_r50v1_fpn_1x' -> 'faster_r101v1_fpn_1x'"]


# --- file errors ------------------------------------------------------------------------------

def test_missing_file_gives_short_error_with_nearby_name(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(CONFIG_DIR / "faster_r50v1_fpn_1X.py")
    assert "config file not found" in str(info.value)
    assert "faster_r50v1_fpn_1x.py" in info.value.suggestion
    assert_short(info.value)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nothing" / "here.py")


def test_syntax_error_gives_file_and_line(config_dir):
    path = write_leaf(config_dir, "broken.py", "cfg.rpn.nms_iou = (0.6", "x = 1")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert "syntax error" in err.message and err.file.endswith("broken.py") and err.line == 4
    assert_short(err)


def test_error_in_base_and_misspelled_base_import(config_dir):
    base = config_dir / "_base" / "faster_fpn.py"
    base.write_text(base.read_text().replace("cfg.rpn.conv_channels = 256",
                                             "cfg.rpn.conv_chanels = 256"))
    with pytest.raises(ConfigError) as info:
        load_config(write_leaf(config_dir, "leaf.py"))
    assert info.value.file.endswith("faster_fpn.py") and "'rpn.conv_channels'" in str(info.value)
    path = config_dir / "typo_base.py"
    path.write_text("from _base.faster_fpm import faster_fpn\ncfg = faster_fpn()\n")
    with pytest.raises(ConfigError, match="did you mean '_base.faster_fpn'") as info:
        load_config(path)
    assert info.value.line == 1


def test_file_without_cfg_and_leaves_no_import_state(config_dir):
    path = config_dir / "empty.py"
    path.write_text("x = 1\n")
    with pytest.raises(ConfigError, match="module-level 'cfg'"):
        load_config(path)
    assert str(config_dir) not in sys.path
    assert "_base" not in sys.modules and "_base.faster_fpn" not in sys.modules


def test_exit_on_config_error_prints_one_message(capsys):
    with pytest.raises(SystemExit) as info:
        with exit_on_config_error():
            load_config(R50_FPN, ["rpn.nms_iuo=0.6"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'rpn.nms_iou'" in err


# --- the mechanism --------------------------------------------------------------------------

def test_sections_extend_by_subclassing():
    class MaskHeadConfig(Section):
        conv_channels: int = field(256, check=positive)
        resolution: int = 28

    class MaskRcnnConfig(FasterRcnnConfig):
        mask_head: MaskHeadConfig

    cfg = MaskRcnnConfig()
    cfg.set("mask_head.resolution", 14)
    assert cfg.mask_head.resolution == 14 and cfg.rpn.nms_iou == 0.7
    assert "mask_head.conv_channels" in cfg.all_keys()
    with pytest.raises(ConfigError, match="did you mean 'mask_head.resolution'"):
        cfg.mask_head.resolutoin = 7


def test_schema_definition_errors():
    with pytest.raises(TypeError, match="needs a default"):
        type("Broken", (Section,), {"__annotations__": {"size": int}})
    with pytest.raises(TypeError, match="reserved"):
        type("Broken", (Section,), {"__annotations__": {"copy": int}, "copy": 1})


def test_section_assignment_copies_and_tracks_paths():
    rpn = RpnConfig(nms_iou=0.6)
    cfg = FasterRcnnConfig()
    cfg.rpn = rpn
    rpn.nms_iou = 0.5  # the config holds its own copy
    assert cfg.rpn.nms_iou == 0.6
    with pytest.raises(ConfigError, match="'rpn.nms_iou' expects float"):
        cfg.rpn.nms_iou = "x"
