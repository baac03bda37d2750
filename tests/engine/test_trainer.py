"""The training loop on a stand-in detector and tiny real data (the real loader, inline)."""
import json
import os

import mxnet as mx
import numpy as np
import pytest
from standin_detector import StandInDetector, tiny_config, write_tiny_coco
from test_tensorboard import read_scalars

from simpledet.engine import checkpoint as ckpt
from simpledet.engine.build import build_dataset, build_train_loader
from simpledet.engine.hooks import LOSS_CURVE_FILE, METRICS_FILE
from simpledet.engine.steps import NonFiniteLossError
from simpledet.engine.tensorboard import TENSORBOARD_DIR
from simpledet.engine.trainer import build_trainer, match_fixed_params

SIZES = [(40, 56), (56, 40), (30, 44), (44, 60), (50, 50), (40, 60), (56, 40), (20, 30)]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    write_tiny_coco(str(root), "train", SIZES)
    return root


def make_trainer(cfg, max_iter=None, contexts=None, loader_wrapper=None):
    detector = StandInDetector(cfg)
    dataset = build_dataset(cfg, "train", for_training=True)
    loader = build_train_loader(cfg, dataset.records, detector)
    if loader_wrapper is not None:
        loader = loader_wrapper(loader)
    return build_trainer(cfg, detector, loader, contexts or [mx.cpu(0)], max_iter=max_iter)


def final_params(experiment_dir, iteration):
    loaded = ckpt.load_checkpoint(ckpt.find_checkpoint(experiment_dir, iteration))
    return ({k: v.asnumpy() for k, v in loaded.arg_params.items()},
            {k: v.asnumpy() for k, v in loaded.aux_params.items()})


def assert_same_params(a, b):
    for part_a, part_b in zip(a, b):
        assert part_a.keys() == part_b.keys()
        for name in part_a:
            np.testing.assert_array_equal(part_a[name], part_b[name], err_msg=name)


def test_twenty_straight_equals_ten_plus_resumed_ten(data_root, tmp_path):
    straight = tiny_config(data_root, output_root=str(tmp_path / "a"))
    trainer = make_trainer(straight)
    result = trainer.train()
    assert trainer.iteration == 20 and result.iteration == 19
    assert all(np.isfinite(v) for v in result.losses.values())

    split = tiny_config(data_root, output_root=str(tmp_path / "b"))
    first = make_trainer(split, max_iter=10)
    first.train()
    assert [it for it, _ in ckpt.list_checkpoints(split.experiment_dir)] == [10]
    second = make_trainer(split)
    assert second.resume() == 10
    second.train()

    assert_same_params(final_params(straight.experiment_dir, 10),
                       final_params(split.experiment_dir, 10))
    assert_same_params(final_params(straight.experiment_dir, 20),
                       final_params(split.experiment_dir, 20))
    # the run did train, and the fixed stem did not move
    args10, _ = final_params(straight.experiment_dir, 10)
    args20, _ = final_params(straight.experiment_dir, 20)
    assert not np.array_equal(args10["body_conv_weight"], args20["body_conv_weight"])
    np.testing.assert_array_equal(args10["stem_conv_weight"], args20["stem_conv_weight"])
    # the loader position is part of the checkpoint
    state = ckpt.load_checkpoint(ckpt.find_checkpoint(split.experiment_dir, 10)).state
    assert state["loader"]["batch_index"] + state["loader"]["epoch"] > 0


def test_metrics_log_and_loss_curve(data_root, tmp_path, caplog):
    cfg = tiny_config(data_root, output_root=str(tmp_path))
    trainer = make_trainer(cfg)
    with caplog.at_level("INFO", logger="simpledet.train"):
        trainer.train()
    with open(os.path.join(cfg.experiment_dir, METRICS_FILE)) as f:
        records = [json.loads(line) for line in f]
    assert [r["iteration"] for r in records] == [5, 10, 15, 20]
    assert set(records[0]["losses"]) == {"rpn_cls_loss", "rpn_reg_loss"}
    # lr of the last iteration of each window: warmup done, steps at 12 and 16
    assert [r["lr"] for r in records] == pytest.approx([cfg.lr, cfg.lr, cfg.lr * 0.1,
                                                        cfg.lr * 0.01])
    assert records[-1]["loss"] == pytest.approx(sum(records[-1]["losses"].values()))
    # the TensorBoard event files hold the same windows
    scalars = read_scalars(os.path.join(cfg.experiment_dir, TENSORBOARD_DIR))
    assert scalars["loss/total"] == [(r["iteration"], pytest.approx(r["loss"])) for r in records]
    assert os.path.getsize(os.path.join(cfg.experiment_dir, LOSS_CURVE_FILE)) > 1000
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("iter ")]
    assert lines and all("img/s" in line and "eta" in line and "rpn_cls_loss" in line
                         for line in lines)


class NanAt:
    """Wraps a loader, making the RPN regression targets of batch `at` (0-based) NaN (NaN
    pixels would not do: ReLU maps NaN to 0)."""

    def __init__(self, loader, at):
        self.loader, self.at, self.count = loader, at, 0

    def __iter__(self):
        for batch in self.loader:
            if self.count == self.at:
                batch = dict(batch, rpn_target=np.full_like(batch["rpn_target"], np.nan))
            self.count += 1
            yield batch

    def state_dict(self):
        return self.loader.state_dict()

    def close(self):
        self.loader.close()


def test_nan_loss_stops_with_iteration_and_loss_named(data_root, tmp_path):
    cfg = tiny_config(data_root, output_root=str(tmp_path),
                      **{"train.checkpoint_interval": 2})
    trainer = make_trainer(cfg, loader_wrapper=lambda loader: NanAt(loader, 3))
    with pytest.raises(NonFiniteLossError,
                       match=r"iteration 3: rpn_reg_loss = nan \(other losses: "
                             r"rpn_cls_loss = .*update was not applied"):
        trainer.train()
    assert trainer.iteration == 3
    # the last checkpoint (iteration 2) is intact and finite
    assert [it for it, _ in ckpt.list_checkpoints(cfg.experiment_dir)] == [2]
    args, _ = final_params(cfg.experiment_dir, 2)
    assert all(np.isfinite(v).all() for v in args.values())


def test_two_cpu_contexts_split_the_batch(data_root, tmp_path):
    cfg = tiny_config(data_root, output_root=str(tmp_path), **{
        "runtime.device_ids": (0, 1), "train.images_per_device": 2})
    trainer = make_trainer(cfg, max_iter=3, contexts=[mx.cpu(0), mx.cpu(1)])
    result = trainer.train()
    assert trainer.module.optimizer.rescale_grad == pytest.approx(0.5)
    assert all(np.isfinite(v) for v in result.losses.values())
    assert trainer.images_per_iteration == 4


def test_fixed_patterns_are_anchored(caplog):
    names = ["stage1_conv_weight", "head_stage1_weight", "bn_gamma"]
    assert match_fixed_params(names, [r"^stage1_"]) == ["stage1_conv_weight"]
    with caplog.at_level("WARNING", logger="simpledet.train"):
        assert match_fixed_params(names, [r"^nothing_"]) == []
    assert "matches no parameter" in caplog.text
