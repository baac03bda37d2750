"""Two training iterations of the zoo config at its full 800x1333 input size (R50-FPN, CPU).

The one test that runs the real detector forward and backward at full size: both iterations
must give finite losses, and the checkpoint must hold every parameter.
"""
import os

import mxnet as mx
import numpy as np
from standin_detector import write_tiny_coco

from simpledet.config import load_config
from simpledet.config.faster_rcnn import COCO_CLASS_NAMES
from simpledet.engine import checkpoint as ckpt
from simpledet.engine.build import build_dataset, build_detector, build_train_loader
from simpledet.engine.hooks import CheckpointHook
from simpledet.engine.trainer import build_trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_two_iterations_at_800x1333_give_finite_losses(tmp_path):
    write_tiny_coco(str(tmp_path), "train", [(600, 1000), (700, 900)],
                    class_names=COCO_CLASS_NAMES)
    cfg = load_config(os.path.join(REPO, "config", "faster_r50v1_fpn_1x.py"), [
        "pretrain=none", "backbone.normalizer=bn", f"dataset.root={tmp_path}",
        "dataset.train_split=train", "runtime.device=cpu", "runtime.device_ids=(0,)",
        "runtime.kvstore=local", "train.images_per_device=1", "input.loader_workers=0",
        f"output_root={tmp_path / 'experiments'}"])
    assert (cfg.input.short, cfg.input.long) == (800, 1333)
    detector = build_detector(cfg)
    loader = build_train_loader(cfg, build_dataset(cfg, "train", True).records, detector)
    losses = []

    class Record(CheckpointHook):
        def after_step(self, trainer, result):
            losses.append(result.losses)

    trainer = build_trainer(cfg, detector, loader, [mx.cpu(0)], max_iter=2,
                            hooks=[Record(100)])
    trainer.train()
    assert len(losses) == 2
    for step in losses:
        assert set(step) == {"rpn_cls_loss", "rpn_reg_loss", "bbox_cls_loss", "bbox_reg_loss"}
        assert all(np.isfinite(v) for v in step.values()), step
    saved = ckpt.load_checkpoint(ckpt.find_checkpoint(cfg.experiment_dir))
    assert saved.iteration == 2
    symbol = detector.get_train_symbol()
    expected = set(symbol.list_arguments()) - set(detector.train_data_names)
    assert set(saved.arg_params) == expected
    assert set(saved.aux_params) == set(symbol.list_auxiliary_states())
