"""Two training iterations of the zoo configs at their full 800x1333 input size (R50-FPN and
R50-C4 with 512 rois, CPU), one image per iteration: first an image with boxes, then one with
none (every anchor negative, no foreground roi). Both iterations must give finite losses, and
the checkpoint must hold every parameter.
"""
import json
import os

import mxnet as mx
import numpy as np
import pytest
from standin_detector import write_tiny_coco

from simpledet.config import load_config
from simpledet.config.faster_rcnn import COCO_CLASS_NAMES
from simpledet.engine import checkpoint as ckpt
from simpledet.engine.build import build_dataset, build_detector, build_train_loader
from simpledet.engine.hooks import CheckpointHook
from simpledet.engine.trainer import build_trainer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _drop_boxes_of_last_image(ann_file):
    with open(ann_file) as f:
        content = json.load(f)
    last = max(image["id"] for image in content["images"])
    content["annotations"] = [a for a in content["annotations"] if a["image_id"] != last]
    with open(ann_file, "w") as f:
        json.dump(content, f)


@pytest.mark.parametrize("config", ["faster_r50v1_fpn_1x.py", "faster_r50v1c4_c5_512roi_1x.py"])
def test_two_iterations_at_800x1333_give_finite_losses(tmp_path, config):
    ann_file, _ = write_tiny_coco(str(tmp_path), "train", [(600, 1000), (700, 900)],
                                  class_names=COCO_CLASS_NAMES)
    _drop_boxes_of_last_image(ann_file)
    cfg = load_config(os.path.join(REPO, "config", config), [
        "pretrain=none", "backbone.normalizer=bn", f"dataset.root={tmp_path}",
        "dataset.train_split=train", "runtime.device=cpu", "runtime.device_ids=(0,)",
        "runtime.kvstore=local", "train.images_per_device=1", "input.loader_workers=0",
        "input.flip=False", f"output_root={tmp_path / 'experiments'}"])
    assert (cfg.input.short, cfg.input.long) == (800, 1333)
    detector = build_detector(cfg)
    # Test-mode records keep the image without boxes (training mode would exclude it).
    records = sorted(build_dataset(cfg, "train", False).records, key=lambda r: r["image_id"])
    assert [len(r["boxes"]) for r in records] == [2, 0]
    with build_train_loader(cfg, records, detector) as probe:  # same seed: the same batches
        batches = iter(probe)
        gt_counts = sorted(int((next(batches)["gt_boxes"][:, :, 4] > 0).sum()) for _ in range(2))
    assert gt_counts == [0, 2], "the two iterations must see the empty and the non-empty image"
    loader = build_train_loader(cfg, records, detector)
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
