"""Fixed-parameter patterns: anchored, exactly the frozen stages and frozen norm affines."""
import json
import re
from pathlib import Path

import pytest

from simpledet.config import FasterRcnnConfig, load_config
from simpledet.detectors import FasterRcnn
from simpledet.models import check_anchored, select_params
from simpledet.models.backbone import Normalizer, ResNet

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config" / "faster_r50v1_fpn_1x.py"


def make_cfg(neck="fpn", variant="v1", normalizer="fixbn", frozen_stages=1):
    cfg = FasterRcnnConfig()
    cfg.neck.type = neck
    cfg.bbox_head.type = "2mlp" if neck == "fpn" else "c5"
    cfg.backbone.variant = variant
    cfg.backbone.normalizer = normalizer
    cfg.backbone.frozen_stages = frozen_stages
    cfg.freeze()
    return cfg


def frozen_bn_affines(symbol):
    """gamma/beta of every BatchNorm that uses stored statistics, read from the graph."""
    names = set()
    for node in json.loads(symbol.tojson())["nodes"]:
        if node["op"] == "BatchNorm" and node["attrs"].get("use_global_stats") == "True":
            names |= {f"{node['name']}_gamma", f"{node['name']}_beta"}
    return names


def fixed_names(cfg):
    model = FasterRcnn(cfg)
    symbol = model.get_train_symbol()
    args = symbol.list_arguments()
    return symbol, args, set(select_params(args, model.fixed_param_patterns()))


def test_unanchored_patterns_are_rejected():
    for bad in ("gamma", "stage1_", "conv0", "(^stage1_)"):
        with pytest.raises(ValueError, match="anchored"):
            check_anchored([bad])
    assert check_anchored(["^stage1_"]) == ["^stage1_"]


def test_patterns_match_from_the_start_only():
    names = ["stage1_unit1_conv1_weight", "bbox_stage1_x_weight", "rpn_bn0_gamma",
             "bn0_gamma", "stage10_unit1_conv1_weight"]
    assert select_params(names, ["^stage1_", "^bn0_"]) == ["stage1_unit1_conv1_weight",
                                                           "bn0_gamma"]


def test_fpn_fixbn_freezes_stem_stage1_and_every_backbone_bn_affine():
    symbol, args, fixed = fixed_names(make_cfg())
    stem_stage1 = {a for a in args if re.match(r"(conv0|bn0|stage1)_", a)}
    assert fixed == stem_stage1 | frozen_bn_affines(symbol)
    assert "stage2_unit1_conv1_weight" not in fixed
    assert "stage2_unit1_bn1_gamma" in fixed and "stage4_unit3_sc_bn_beta" not in args
    assert not any(a.startswith(("fpn_", "rpn_", "bbox_")) for a in fixed)
    # a bare "gamma" in SimpleDet's style would also catch every head norm; ours are exact
    assert {a for a in args if "gamma" in a} == {a for a in fixed if "gamma" in a}


def test_c4_fixbn_freezes_res5_norms_inside_the_box_head():
    symbol, args, fixed = fixed_names(make_cfg(neck="none"))
    assert fixed == ({a for a in args if re.match(r"(conv0|bn0|stage1)_", a)}
                     | frozen_bn_affines(symbol))
    assert "stage4_unit1_bn1_gamma" in fixed and "stage4_unit1_conv1_weight" not in fixed


def test_trainable_normalizer_freezes_only_the_frozen_stages():
    _, args, fixed = fixed_names(make_cfg(normalizer="bn", frozen_stages=2))
    assert fixed == {a for a in args if re.match(r"(conv0|bn0|stage1|stage2)_", a)}
    assert "stage3_unit1_bn1_gamma" not in fixed


@pytest.mark.parametrize("normalizer", ["bn", "syncbn"])
def test_frozen_stages_use_stored_batchnorm_statistics(normalizer):
    symbol, _, fixed = fixed_names(make_cfg(normalizer=normalizer, frozen_stages=2))
    stored = frozen_bn_affines(symbol)  # BatchNorm layers with use_global_stats
    frozen_norms = {n for n in fixed if n.endswith(("_gamma", "_beta"))}
    assert stored == frozen_norms and stored  # exactly the frozen stem / stage1-2 norms
    batch_stat_ops = {node["name"] for node in json.loads(symbol.tojson())["nodes"]
                      if node["op"] in ("BatchNorm", "_contrib_SyncBatchNorm")
                      and node["attrs"].get("use_global_stats", "False") == "False"}
    assert "stage3_unit1_bn1" in batch_stat_ops and "bn0" not in batch_stat_ops


def test_nothing_frozen_with_frozen_stages_0_and_gn():
    _, _, fixed = fixed_names(make_cfg(normalizer="gn", frozen_stages=0))
    assert fixed == set()


def test_v2_input_whitening_is_always_frozen():
    _, _, fixed = fixed_names(make_cfg(neck="none", variant="v2", normalizer="bn",
                                       frozen_stages=0))
    assert fixed == {"bn_data_gamma", "bn_data_beta"}


def test_frozen_stages_4_and_5_freeze_all_stages():
    backbone = ResNet("v1", 50, Normalizer("bn"), frozen_stages=5)
    assert backbone.fixed_param_patterns() == ["^conv0_", "^bn0_", "^stage1_", "^stage2_",
                                               "^stage3_", "^stage4_"]


def test_zoo_config_patterns_are_anchored():
    model = FasterRcnn(load_config(REPO_CONFIG))
    assert check_anchored(model.fixed_param_patterns())
