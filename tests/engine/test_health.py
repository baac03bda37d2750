"""The health hook: gradient norm in the metrics, a dead network stopped with a message."""
import json
import os

import mxnet as mx
import numpy as np
import pytest
from standin_detector import StandInDetector, tiny_config, write_tiny_coco

from simpledet.engine.build import build_dataset, build_train_loader
from simpledet.engine.health import DEAD_CHECKS, DeadTrainingError, HealthHook
from simpledet.engine.hooks import METRICS_FILE
from simpledet.engine.steps import StepResult
from simpledet.engine.trainer import build_trainer


class DeadStandIn(StandInDetector):
    """All-zero initial weights: every ReLU output is 0, so no weight ever gets gradient."""

    @staticmethod
    def initializer():
        return mx.init.Zero()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny")
    write_tiny_coco(str(root), "train", [(40, 56), (56, 40), (30, 44), (44, 60)])
    return root


def train(detector_class, cfg):
    detector = detector_class(cfg)
    loader = build_train_loader(cfg, build_dataset(cfg, "train", True).records, detector)
    trainer = build_trainer(cfg, detector, loader, [mx.cpu(0)])
    return trainer, trainer.train


def test_dead_network_stops_after_three_checks(data_root, tmp_path):
    cfg = tiny_config(data_root, output_root=str(tmp_path))
    trainer, run = train(DeadStandIn, cfg)
    with pytest.raises(DeadTrainingError, match=r"training is dead at iteration 15: 3 of 3 "
                                                r"weight arrays got exactly zero gradient"):
        run()
    assert trainer.iteration == 5 * DEAD_CHECKS  # checks at 5, 10, 15 (log_interval 5)


def test_dead_network_only_logged_when_told(data_root, tmp_path, caplog):
    cfg = tiny_config(data_root, output_root=str(tmp_path), **{"train.stop_when_dead": False})
    trainer, run = train(DeadStandIn, cfg)
    with caplog.at_level("ERROR", logger="simpledet.train"):
        run()
    assert trainer.iteration == 20
    assert any("training is dead" in r.getMessage() for r in caplog.records)


def test_live_network_logs_grad_norm(data_root, tmp_path):
    cfg = tiny_config(data_root, output_root=str(tmp_path))
    trainer, run = train(StandInDetector, cfg)
    run()
    with open(os.path.join(cfg.experiment_dir, METRICS_FILE)) as f:
        records = [json.loads(line) for line in f]
    assert [r["iteration"] for r in records] == [5, 10, 15, 20]
    assert all(r["grad_norm"] > 0 for r in records)


class FakeModule:
    def __init__(self, grads):
        self.grads = grads

    def named_gradients(self):
        return [(n, mx.nd.array(g)) for n, g in self.grads.items()]

    def gradient_norm(self):
        return float(np.sqrt(sum(np.square(g).sum() for g in self.grads.values())))


class FakeTrainer:
    def __init__(self, grads):
        self.module, self.iteration = FakeModule(grads), 0


def test_half_zero_weights_is_dead_but_zero_biases_are_not():
    hook = HealthHook(interval=1)
    zero_biases = FakeTrainer({"a_weight": [1.0, 0.0], "a_bias": [0.0], "b_bias": [0.0]})
    for i in range(1, 10):
        zero_biases.iteration = i
        result = StepResult(iteration=i - 1, losses={}, lr=0.1)
        hook.after_step(zero_biases, result)
        assert result.grad_norm == pytest.approx(1.0)
    half = FakeTrainer({"a_weight": [0.0, 0.0], "b_weight": [3.0, 4.0]})
    hook.before_train(half)
    for i in range(1, DEAD_CHECKS):
        half.iteration = i
        hook.after_step(half, StepResult(iteration=i - 1, losses={}, lr=0.1))
    half.iteration = DEAD_CHECKS
    with pytest.raises(DeadTrainingError, match="1 of 2 weight arrays"):
        hook.after_step(half, StepResult(iteration=DEAD_CHECKS - 1, losses={}, lr=0.1))


def test_a_live_check_resets_the_count():
    hook = HealthHook(interval=1)
    trainer = FakeTrainer({"a_weight": [0.0]})
    live = FakeTrainer({"a_weight": [1.0]})
    for i in range(1, 3 * DEAD_CHECKS):
        who = live if i % DEAD_CHECKS == 0 else trainer  # never DEAD_CHECKS dead in a row
        who.iteration = i
        hook.after_step(who, StepResult(iteration=i - 1, losses={}, lr=0.1))
