"""Smoke test of the DCN and GroupNorm options and of the C5-reduce layout through the real
training CLI: the shapes quickstart layouts with DCNv2 in res3-res5 (C4, res5 in the box head
too), with GroupNorm in the backbone, the FPN and a 4conv1fc box head, and the Cascade R-CNN
quickstart on the C5-reduce layout (neck.type 'c5_reduce': dilated res5 at stride 16, reduced
to 32 channels, 2MLP stage heads, as cascade_r50v2_c5_red_1x) train 3 iterations at 64x80 on a
tiny dataset written here; every logged loss must be finite and the checkpoint written. On CPU
DCNv2 runs its stock-op implementation (MXNet 1.9.1's modulated op has no CPU backward). ~5 s
of CPU each on 2 cores.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_train_test_cli import CATEGORIES, TRAIN_IMAGES, write_split

REPO = Path(__file__).resolve().parents[2]
ITERATIONS = 3
VARIANTS = {
    "dcnv2": ("faster_c4.py", ["backbone.dcn_stages=(3, 4, 5)", "backbone.dcn_version=2"],
              "stage4_unit1_conv2_offset_weight"),
    "gn": ("faster_fpn.py", ["backbone.normalizer=gn", "neck.normalizer=gn", "neck.channels=64",
                             "bbox_head.type=4conv1fc", "bbox_head.normalizer=gn",
                             "bbox_head.conv_channels=64"], "fpn_p2_conv_norm_gamma"),
    "cascade_c5_reduce": ("cascade_fpn.py", ["neck.type=c5_reduce", "neck.channels=32",
                                             "rpn.anchor_scales=(1.0, 2.0, 4.0, 8.0)"],
                          "c5_reduce_conv_weight"),
}
FASTER_LOSSES = {"rpn_cls_loss", "rpn_reg_loss", "bbox_cls_loss", "bbox_reg_loss"}
LOSSES = {"cascade_c5_reduce": {"rpn_cls_loss", "rpn_reg_loss"} | {
    f"bbox_{kind}_loss_{stage}" for stage in ("1st", "2nd", "3rd") for kind in ("cls", "reg")}}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_dcn_gn_and_c5_reduce_quickstarts_train_with_finite_losses(tmp_path, variant):
    config, options, param = VARIANTS[variant]
    data = tmp_path / "data"
    write_split(data, "train", TRAIN_IMAGES, seed=0)
    overrides = ["dataset.synthetic=none", f"dataset.root={data}", "dataset.train_split=train",
                 f"dataset.class_names={tuple(CATEGORIES.values())!r}", "input.short=64",
                 "input.long=80", "input.loader_workers=0", "train.images_per_device=1",
                 "train.iters_at_batch16=1", "train.lr_steps_at_batch16=()",
                 "train.warmup_iters=1", "train.log_interval=1", "train.tensorboard=False",
                 f"output_root={tmp_path / 'experiments'}", "name=smoke", *options]
    completed = subprocess.run(
        [sys.executable, str(REPO / "detection_train.py"), "--config",
         str(REPO / "config" / "shapes" / config), "--max-iter", str(ITERATIONS), "--set",
         *overrides], cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert completed.returncode == 0, (completed.stdout[-3000:], completed.stderr[-3000:])
    experiment = tmp_path / "experiments" / "smoke"
    assert (experiment / "checkpoints" / f"iter_{ITERATIONS:07d}").is_dir()
    records = [json.loads(line) for line in
               (experiment / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if "losses" in r]
    assert [r["iteration"] for r in steps] == list(range(1, ITERATIONS + 1))
    for record in steps:
        assert set(record["losses"]) == LOSSES.get(variant, FASTER_LOSSES)
        assert all(math.isfinite(v) for v in record["losses"].values()), record
    # the option really is in the trained model: its parameters are in the checkpoint
    import mxnet as mx

    saved = mx.nd.load(str(experiment / "checkpoints" / f"iter_{ITERATIONS:07d}" /
                           "model.params"))
    assert f"arg:{param}" in saved and all(
        math.isfinite(float(v.abs().sum().asscalar())) for v in saved.values())
