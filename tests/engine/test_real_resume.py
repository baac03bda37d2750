"""Resume on the real detector, in process: the shapes FPN quickstart layout (FasterRcnn with
its random RoI sampling, config/shapes/faster_fpn.py) shrunk by overrides, a loader with one
worker process, trained 8 iterations straight and 4 + 4 resumed from the checkpoint at 4.
The two runs must give bitwise the same losses at every iteration and the same digest over
every parameter (arguments and BatchNorm statistics).

It guards what makes a resume exact: the per-iteration reseed of mx.random (ProposalTarget
samples with MXNet's random states; a seed that depends on the process breaks it from the
first iteration) and the loader position saved in the checkpoint (the resume starts mid-epoch,
so restarting the epoch replays other images). tests/reliability/test_crash_resume.py checks the
same promise through the CLI after a kill -9 at a random iteration; this test is the quick,
deterministic one, and it needs no subprocess.
"""
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest
from standin_detector import write_tiny_coco

from simpledet.config import load_config
from simpledet.engine import checkpoint as ckpt
from simpledet.engine.build import build_dataset, build_detector, build_train_loader
from simpledet.engine.distributed import params_digest
from simpledet.engine.hooks import CheckpointHook, Hook
from simpledet.engine.trainer import build_trainer

REPO = Path(__file__).resolve().parents[2]
SHAPES_FPN = str(REPO / "config" / "shapes" / "faster_fpn.py")
# 6 images (the resume at iteration 4 is mid-epoch), resized to 64x80 with scales != 1
SIZES = [(48, 60), (96, 120), (64, 80), (40, 50), (80, 100), (72, 90)]
ITERATIONS, HALF = 8, 4


def tiny_overrides(root, output_root):
    return ["dataset.synthetic=none", f"dataset.root={root}", "dataset.train_split=train",
            "dataset.val_split=train", "dataset.class_names=('a', 'b')", "input.short=64",
            "input.long=80", "input.loader_workers=1", "train.images_per_device=1",
            "train.iters_at_batch16=1", "train.lr_steps_at_batch16=()",
            "train.warmup_iters=2", f"train.checkpoint_interval={HALF}",
            f"output_root={output_root}", "name=resume"]


class LossRecorder(Hook):
    """{iteration: losses} of every step."""

    def __init__(self):
        self.losses = {}

    def after_step(self, trainer, result):
        self.losses[result.iteration] = dict(result.losses)


def train(cfg, max_iter, resume=False):
    """Trains (or resumes) in this process; returns {iteration: losses} of the steps run."""
    detector = build_detector(cfg)
    dataset = build_dataset(cfg, "train", for_training=True)
    loader = build_train_loader(cfg, dataset.records, detector)
    recorder = LossRecorder()
    trainer = build_trainer(cfg, detector, loader, [mx.cpu(0)], max_iter=max_iter,
                            hooks=[CheckpointHook(cfg.train.checkpoint_interval), recorder])
    if resume:
        assert trainer.resume() == HALF
    trainer.train()
    assert trainer.iteration == max_iter
    return recorder.losses


def checkpoint_digest(cfg, iteration):
    saved = ckpt.load_checkpoint(ckpt.find_checkpoint(cfg.experiment_dir, iteration))
    assert saved.aux_params, "the layout should have BatchNorm statistics"
    return params_digest({**saved.arg_params, **saved.aux_params}), saved


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_tiny_coco(str(root), "train", SIZES)
    return root


def test_real_detector_resumes_bitwise(data_root, tmp_path):
    straight = load_config(SHAPES_FPN, tiny_overrides(data_root, tmp_path / "straight"))
    split = load_config(SHAPES_FPN, tiny_overrides(data_root, tmp_path / "split"))
    assert cfg_is_tiny(straight)

    losses = train(straight, ITERATIONS)
    first = train(split, HALF)
    state = ckpt.load_checkpoint(ckpt.find_checkpoint(split.experiment_dir, HALF)).state
    assert (state["loader"]["epoch"], state["loader"]["batch_index"]) == (0, HALF)  # mid-epoch
    second = train(split, ITERATIONS, resume=True)

    assert sorted(first) == list(range(HALF)) and sorted(second) == list(range(HALF, ITERATIONS))
    assert all(np.isfinite(v) for step in losses.values() for v in step.values())
    for iteration in range(ITERATIONS):
        resumed = first.get(iteration) or second.get(iteration)
        assert resumed == losses[iteration], (
            f"iteration {iteration}: straight {losses[iteration]} vs split+resumed {resumed}")
    for iteration in (HALF, ITERATIONS):
        digest, saved = checkpoint_digest(straight, iteration)
        assert checkpoint_digest(split, iteration)[0] == digest, (
            f"parameters after iteration {iteration} differ between the straight and the "
            "resumed run")
    # the run trained: the parameters moved between the two checkpoints
    _, at_half = checkpoint_digest(straight, HALF)
    moved = [n for n, v in saved.arg_params.items()
             if not np.array_equal(v.asnumpy(), at_half.arg_params[n].asnumpy())]
    assert len(moved) > len(saved.arg_params) // 2, moved


def cfg_is_tiny(cfg):
    """The overrides took: the real FPN layout at 64x80, one image per iteration."""
    return (cfg.max_iter == 16 and cfg.total_batch == 1 and cfg.input.long == 80
            and cfg.neck.channels == 48 and cfg.backbone.normalizer == "bn")
