"""Parameter names are the checkpoint format: golden list_arguments / list_auxiliary_states of
the reference configs. A rename fails here; if it is intended, regenerate the golden files with

    python tests/detectors/test_param_names.py --regenerate

and say in the change why old checkpoints no longer load.
"""
import sys
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GOLDEN_DIR = REPO / "tests" / "golden"
REFERENCE_CONFIGS = ("faster_r50v1_fpn_1x", "faster_r50v1c4_c5_512roi_1x", "mask_r50v1_fpn_1x",
                     "cascade_r50v1_fpn_1x", "retina_r50v1_fpn_1x", "tridentnet_r50v2c4_c5_1x",
                     "tridentnet_r50v2c4_c5_fastapprox_1x", "tridentnet_r101v2c4_c5_1x",
                     "faster_r50v1bc4_c5_512roi_dcnv1_1x", "faster_r50v1bc4_c5_512roi_dcnv2_1x",
                     "faster_r50v1_fpn_gn_1x", "mask_r50v1_fpn_gn_1x",
                     "rpn_r50v1_fpn_1x", "cascade_r50v2_c5_red_1x")


def current_names(config_name):
    """['arg NAME', ..., 'aux NAME', ...] of the config's train symbol, in graph order."""
    from simpledet.config import load_config
    from simpledet.engine.build import build_detector

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_detector(load_config(REPO / "config" / f"{config_name}.py"))
    symbol = model.get_train_symbol()
    return ([f"arg {n}" for n in symbol.list_arguments()]
            + [f"aux {n}" for n in symbol.list_auxiliary_states()])


def golden_path(config_name):
    return GOLDEN_DIR / f"{config_name}.params.txt"


def read_golden(config_name):
    lines = golden_path(config_name).read_text().splitlines()
    return [line for line in lines if line and not line.startswith("#")]


def regenerate():
    for config_name in REFERENCE_CONFIGS:
        header = [(f"# Train-symbol parameter names of config/{config_name}.py ('arg' = "
                   f"list_arguments, 'aux' = list_auxiliary_states)."),
                  "# Regenerate: python tests/detectors/test_param_names.py --regenerate"]
        golden_path(config_name).write_text("\n".join(header + current_names(config_name))
                                            + "\n")
        print(f"wrote {golden_path(config_name)}")


@pytest.mark.parametrize("config_name", REFERENCE_CONFIGS)
def test_parameter_names_match_golden_file(config_name):
    golden, current = read_golden(config_name), current_names(config_name)
    removed = [n for n in golden if n not in current]
    added = [n for n in current if n not in golden]
    assert not removed and not added, (
        f"parameter names of {config_name} changed (checkpoints would not load): removed "
        f"{removed[:10]}, added {added[:10]}; if intended run "
        f"'python tests/detectors/test_param_names.py --regenerate'")
    assert current == golden  # same order, too


def test_golden_files_cover_every_component():
    names = read_golden("faster_r50v1_fpn_1x")
    for expected in ("arg conv0_weight", "arg stage1_unit1_conv1_weight", "arg fpn_p2_conv_weight",
                     "arg rpn_conv_3x3_weight", "arg bbox_fc1_weight", "arg bbox_reg_delta_bias",
                     "aux bn0_moving_mean"):
        assert expected in names
    c4 = read_golden("faster_r50v1c4_c5_512roi_1x")
    assert "arg stage4_unit3_conv3_weight" in c4 and not any("fpn_" in n for n in c4)
    mask = read_golden("mask_r50v1_fpn_1x")
    assert names == [n for n in mask if not n.startswith(("arg mask_", "arg gt_polys"))]
    assert "arg mask_conv4_weight" in mask and "arg mask_deconv_bias" in mask
    cascade = read_golden("cascade_r50v1_fpn_1x")
    shared = [n for n in names if not n.startswith("arg bbox_")]
    assert shared == [n for n in cascade if not n.startswith("arg bbox_")]
    heads = [n for n in cascade if n.startswith("arg bbox_")]
    assert heads == [f"arg bbox_{layer}_{stage}_{kind}" for stage in ("1st", "2nd", "3rd")
                     for layer in ("fc1", "fc2", "cls_logit", "reg_delta")
                     for kind in ("weight", "bias")]  # SimpleDet's cascade names
    retina = read_golden("retina_r50v1_fpn_1x")
    backbone = [n for n in names if n.startswith(("arg conv0", "arg bn", "arg stage", "aux "))]
    assert [n for n in retina if n.startswith(("arg conv0", "arg bn", "arg stage", "aux "))] == (
        backbone)  # the same backbone checkpoint loads into both families
    for expected in ("arg fpn_p7_conv_weight", "arg retina_cls_conv4_weight",
                     "arg retina_bbox_delta_bias", "arg retina_label"):
        assert expected in retina
    assert not any(n.startswith(("arg rpn_", "arg bbox_", "arg fpn_p2")) for n in retina)
    # the RPN-only model is Faster R-CNN's first stage: the same names, no RoI stage, so its
    # checkpoints initialize a Faster R-CNN's backbone, FPN and RPN
    rpn = read_golden("rpn_r50v1_fpn_1x")
    assert rpn == [n for n in names if not n.startswith(("arg bbox_", "arg im_info",
                                                         "arg gt_boxes", "arg gt_crowd"))]


def test_c5_red_cascade_is_the_v2_backbone_a_reduce_conv_and_the_fpn_cascade_heads():
    """cascade_r50v2_c5_red_1x: the v2 classifier's names (res5 dilated, with its final bn1),
    the reduce conv, and the FPN cascade's per-stage head names (no FPN)."""
    red = read_golden("cascade_r50v2_c5_red_1x")
    for expected in ("arg bn_data_gamma", "arg stage4_unit3_conv3_weight", "arg bn1_gamma",
                     "aux bn1_moving_var", "arg c5_reduce_conv_weight",
                     "arg c5_reduce_conv_bias", "arg rpn_conv_3x3_weight"):
        assert expected in red
    assert not any(n.startswith("arg fpn_") for n in red)
    cascade = read_golden("cascade_r50v1_fpn_1x")
    assert [n for n in red if n.startswith("arg bbox_")] == [
        n for n in cascade if n.startswith("arg bbox_")]


def test_trident_branches_add_no_parameters():
    trident = read_golden("tridentnet_r50v2c4_c5_1x")
    assert read_golden("tridentnet_r50v2c4_c5_fastapprox_1x") == trident
    assert trident.count("arg stage3_unit6_conv2_weight") == 1  # shared by the 3 branches
    assert not any("branch" in n for n in trident)
    assert "arg stage3_unit23_conv2_weight" in read_golden("tridentnet_r101v2c4_c5_1x")


@pytest.mark.parametrize("version", [1, 2])
def test_dcn_names_are_the_plain_backbone_plus_offset_convs(version):
    """A plain (v1 / v1b: the same names) pretrained C4 checkpoint loads into the DCN configs:
    the deformable conv2 keeps its name; only zero-initialised offset convs are added, one per
    unit of res3-res5."""
    plain = read_golden("faster_r50v1c4_c5_512roi_1x")
    dcn = read_golden(f"faster_r50v1bc4_c5_512roi_dcnv{version}_1x")
    offsets = [n for n in dcn if "_conv2_offset_" in n]
    assert [n for n in dcn if n not in offsets] == plain
    units = [f"stage{s}_unit{i}" for s, count in ((2, 4), (3, 6), (4, 3))
             for i in range(1, count + 1)]
    assert offsets == [f"arg {u}_conv2_offset_{kind}" for u in units
                       for kind in ("weight", "bias")]


def test_gn_names_replace_biases_and_moving_statistics_by_norm_affines():
    plain, gn = read_golden("faster_r50v1_fpn_1x"), read_golden("faster_r50v1_fpn_gn_1x")
    assert not any(n.startswith("aux ") for n in gn)  # GroupNorm keeps no statistics
    backbone = [n for n in plain if n.startswith(("arg conv0", "arg bn", "arg stage"))]
    assert [n for n in gn if n.startswith(("arg conv0", "arg bn", "arg stage"))] == backbone
    for level in (2, 3, 4, 5):
        for layer in ("lateral", "conv"):
            name = f"fpn_p{level}_{layer}"
            assert f"arg {name}_bias" in plain and f"arg {name}_bias" not in gn
            assert {f"arg {name}_norm_gamma", f"arg {name}_norm_beta"} <= set(gn)
    assert [n for n in gn if n.startswith("arg bbox_")] == (
        [f"arg bbox_conv{i}_{kind}" for i in range(1, 5)
         for kind in ("weight", "norm_gamma", "norm_beta")]
        + [f"arg bbox_{layer}_{kind}" for layer in ("fc1", "cls_logit", "reg_delta")
           for kind in ("weight", "bias")])
    mask = read_golden("mask_r50v1_fpn_gn_1x")
    assert [n for n in mask if n.startswith("arg mask_")] == (
        [f"arg mask_conv{i}_{kind}" for i in range(1, 5)
         for kind in ("weight", "norm_gamma", "norm_beta")]
        + ["arg mask_deconv_weight", "arg mask_deconv_bias", "arg mask_logit_weight",
           "arg mask_logit_bias"])


if __name__ == "__main__":
    if sys.argv[1:] != ["--regenerate"]:
        sys.exit(f"usage: python {sys.argv[0]} --regenerate")
    regenerate()
