"""Dynamic loss scaling: the scale state machine, the graph input, and the fp16 step run by the
real Trainer on a tiny hand-made graph (fp32 on CPU: the scaling logic does not depend on the
dtype; an fp16-style overflow is produced by a term whose forward value is 0 and whose gradient
is huge, so only the scaled gradient overflows, as in fp16)."""
import json
import os

import mxnet as mx
import numpy as np
import pytest

from simpledet.config import ConfigError, load_config
from simpledet.core.precision import PrecisionError
from simpledet.engine.hooks import LoggingHook
from simpledet.engine.loss_scale import (
    LOSS_SCALE_INPUT,
    DynamicLossScaler,
    GradientOverflowError,
    all_finite,
    scale_losses,
)
from simpledet.engine.schedule import LrSchedule
from simpledet.engine.steps import LossScaledStep, NonFiniteLossError, SgdStep
from simpledet.engine.tester import run_test
from simpledet.engine.trainer import Trainer, build_trainer, default_step

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPIKE = 1e30  # gradient size of a "spike" batch: inf once multiplied by a scale >= 2^29


# --- the scaler ------------------------------------------------------------------------------

def test_overflow_skips_and_halves_clean_steps_grow():
    scaler = DynamicLossScaler(initial_scale=1024, growth_interval=3, min_scale=1)
    assert scaler.update(False) is False
    assert (scaler.scale, scaler.skipped_steps, scaler.clean_steps) == (512, 1, 0)
    assert [scaler.update(True) for _ in range(2)] == [True, True]
    assert scaler.scale == 512  # two clean steps: not yet
    assert scaler.update(True) and scaler.scale == 1024 and scaler.clean_steps == 0
    scaler.update(True)
    scaler.update(True)
    assert scaler.update(False) is False  # an overflow resets the clean count
    assert (scaler.scale, scaler.clean_steps, scaler.skipped_steps) == (512, 0, 2)


def test_overflow_at_the_minimum_scale_raises_and_state_round_trips():
    scaler = DynamicLossScaler(initial_scale=4, growth_interval=10, min_scale=2)
    assert not scaler.update(False) and scaler.scale == 2
    with pytest.raises(GradientOverflowError, match="minimum loss scale 2"):
        scaler.update(False)
    restored = DynamicLossScaler()
    restored.load_state_dict(json.loads(json.dumps(scaler.state_dict())))
    assert restored.state_dict() == {"loss_scale": 2.0, "clean_steps": 0, "skipped_steps": 1}


def test_all_finite_over_contexts():
    ok = [mx.nd.ones((3,), ctx=mx.cpu(0)), mx.nd.zeros((2, 2), ctx=mx.cpu(1))]
    assert all_finite(ok)
    assert not all_finite(ok + [mx.nd.array([1.0, np.inf], ctx=mx.cpu(1))])
    assert not all_finite(ok + [mx.nd.array([np.nan], ctx=mx.cpu(0))])
    assert all_finite([mx.nd.ones((1,)) for _ in range(450)])  # more than one chunk


# --- the graph -------------------------------------------------------------------------------

def tiny_graph():
    """fc on x (B, 1, 2, 2) fitted to 1; a "spike" term, 0 forward, whose weight gradient is the
    sum of s (B, 1, 2, 2): s = SPIKE makes only the gradient overflow."""
    x, s = mx.sym.var("x"), mx.sym.var("s")
    weight, bias = mx.sym.var("fc_weight"), mx.sym.var("fc_bias")
    fit = mx.sym.FullyConnected(x, weight=weight, bias=bias, num_hidden=2, name="fc")
    fit = mx.sym.mean(mx.sym.sum(mx.sym.square(fit - 1.0), axis=1))
    spike = mx.sym.FullyConnected(s, weight=weight, no_bias=True, num_hidden=2, name="spike")
    spike = mx.sym.sum(spike - mx.sym.BlockGrad(spike))
    return mx.sym.Group([mx.sym.MakeLoss(fit, name="fit_loss"),
                         mx.sym.MakeLoss(spike, name="spike_loss", grad_scale=1.0)])


def test_scale_losses_multiplies_each_loss_by_the_input():
    scaled = scale_losses(tiny_graph())
    assert scaled.list_outputs() == ["fit_loss_output", "spike_loss_output"]
    assert set(scaled.list_arguments()) == set(tiny_graph().list_arguments()) | {
        LOSS_SCALE_INPUT}
    assert scaled.attr_dict()["spike_loss"]["grad_scale"] == "1.0"
    executor = scaled.simple_bind(mx.cpu(), x=(2, 1, 2, 2), s=(2, 1, 2, 2), loss_scale=(2,))
    executor.arg_dict["fc_weight"][:] = 0.5
    executor.arg_dict["fc_bias"][:] = 0
    executor.arg_dict["x"][:] = 1
    executor.arg_dict["s"][:] = 0
    executor.arg_dict[LOSS_SCALE_INPUT][:] = 8
    executor.forward(is_train=True)
    # each fc output is 4 * 0.5 = 2, (2 - 1)^2 summed over 2 outputs = 2; scaled by 8
    assert executor.outputs[0].asnumpy()[0] == pytest.approx(8 * 2.0)
    executor.backward()
    unscaled = tiny_graph().simple_bind(mx.cpu(), x=(2, 1, 2, 2), s=(2, 1, 2, 2))
    for name in ("fc_weight", "fc_bias", "x", "s"):
        unscaled.arg_dict[name][:] = executor.arg_dict[name]
    unscaled.forward(is_train=True)
    unscaled.backward()
    np.testing.assert_allclose(executor.grad_dict["fc_weight"].asnumpy(),
                               8 * unscaled.grad_dict["fc_weight"].asnumpy(), rtol=1e-6)
    assert executor.grad_dict[LOSS_SCALE_INPUT].asnumpy().sum() == 0  # gradient-free input
    with pytest.raises(ValueError, match="MakeLoss"):
        scale_losses(mx.sym.Group([mx.sym.var("a") * 2]))


# --- the step in the trainer -----------------------------------------------------------------

class ListLoader:
    """The given batches, in order, again and again."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def batch(spike=False, seed=0):
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((2, 1, 2, 2)).astype(np.float32),
            "s": np.full((2, 1, 2, 2), SPIKE if spike else 0.0, np.float32)}


class Record:
    """Each step's result, the optimizer's update count and fc_weight after it."""

    def __init__(self):
        self.results, self.num_updates, self.weights = [], [], []
        self.initial_weights = None

    def before_train(self, trainer):
        pass

    def before_step(self, trainer, iteration):
        if self.initial_weights is None:  # bound and initialized by now
            self.initial_weights = trainer.module.get_params()[0]["fc_weight"].asnumpy()

    def after_step(self, trainer, result):
        self.results.append(result)
        self.num_updates.append(trainer.module.optimizer.num_update)
        self.weights.append(trainer.module.get_params()[0]["fc_weight"].asnumpy())

    def after_train(self, trainer):
        pass


def train(tmp_path, batches, step, clip_gradient=None, hooks=()):
    record = Record()
    schedule = LrSchedule(base_lr=0.1, max_iter=len(batches), warmup_iters=2, warmup_lr=0.01)
    trainer = Trainer(symbol=tiny_graph(), data_names=["x", "s"], contexts=[mx.cpu(0)],
                      loader=ListLoader(batches), schedule=schedule,
                      experiment_dir=str(tmp_path), kvstore="local", clip_gradient=clip_gradient,
                      hooks=[record, *hooks], step=step)
    trainer.train()
    return trainer, record


def test_overflow_skips_the_update_halves_the_scale_and_keeps_the_schedule(tmp_path):
    step = LossScaledStep(DynamicLossScaler(initial_scale=2.0 ** 31, growth_interval=100))
    # A spike overflows at every scale >= 2^28; the first step overflowing is the usual case
    # (the initial scale is too high) and the hardest for the optimizer's update counts.
    batches = [batch(spike=True), batch(), batch(spike=True), batch(spike=True), batch(seed=1)]
    trainer, record = train(tmp_path, batches, step)
    assert [r.applied for r in record.results] == [False, True, False, False, True]
    assert [r.loss_scale for r in record.results] == [2.0 ** 31, 2.0 ** 30, 2.0 ** 30,
                                                      2.0 ** 29, 2.0 ** 28]
    assert [r.skipped_steps for r in record.results] == [1, 1, 2, 3, 3]
    # skipped steps leave the weights untouched, applied ones move them
    np.testing.assert_array_equal(record.weights[0], record.initial_weights)
    np.testing.assert_array_equal(record.weights[2], record.weights[1])
    np.testing.assert_array_equal(record.weights[3], record.weights[1])
    assert not np.array_equal(record.weights[1], record.weights[0])
    assert not np.array_equal(record.weights[4], record.weights[3])
    # skipped steps count as updates, so iteration i still uses the lr of iteration i
    assert record.num_updates == [1, 2, 3, 4, 5]
    assert trainer.module.optimizer._get_lr(0) == pytest.approx(trainer.schedule.lr_at(4))
    # losses are reported unscaled
    assert record.results[4].losses["spike_loss"] == 0
    assert 0 < record.results[1].losses["fit_loss"] < 20


@pytest.mark.parametrize("clip", [None, 0.5])
def test_scaled_update_equals_the_fp32_update(tmp_path, clip):
    """Gradients are unscaled (rescale_grad) before clipping and the update: the loss-scaled
    run equals the plain fp32 step, update for update (the scale is a power of two, so the
    scaling itself is exact; the tolerance covers float32 rounding of the unscale)."""
    batches = [batch(seed=i) for i in range(3)]
    _, plain = train(tmp_path / "plain", batches, SgdStep(), clip_gradient=clip)
    _, scaled = train(tmp_path / "scaled", batches,
                      LossScaledStep(DynamicLossScaler(initial_scale=2.0 ** 12)),
                      clip_gradient=clip)
    for a, b in zip(plain.weights, scaled.weights):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    for a, b in zip(plain.results, scaled.results):
        assert a.losses == pytest.approx(b.losses, rel=1e-6)
    if clip is not None:
        _, unclipped = train(tmp_path / "unclipped", batches, SgdStep())
        assert not np.allclose(unclipped.weights[-1], plain.weights[-1])  # clipping acted


def test_scale_grows_after_growth_interval_clean_steps(tmp_path):
    step = LossScaledStep(DynamicLossScaler(initial_scale=8, growth_interval=2))
    _, record = train(tmp_path, [batch(seed=i) for i in range(5)], step)
    assert [r.loss_scale for r in record.results] == [8, 8, 16, 16, 32]
    assert all(r.applied for r in record.results)


def test_loss_scale_is_checkpointed_and_logged(tmp_path, caplog):
    step = LossScaledStep(DynamicLossScaler(initial_scale=2.0 ** 31, growth_interval=100))
    metrics = str(tmp_path / "metrics.jsonl")
    with caplog.at_level("INFO", logger="simpledet.train"):
        trainer, _ = train(tmp_path, [batch(), batch(spike=True)], step,
                           hooks=[LoggingHook(1, metrics)])
    assert "gradient overflow at loss scale 2.14748e+09" in caplog.text
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("iter 2/")]
    assert "loss_scale 2.14748e+09  skipped 1" in lines[0]
    with open(metrics) as f:
        records = [json.loads(line) for line in f]
    assert [(r["loss_scale"], r["skipped_steps"]) for r in records] == [(2.0 ** 31, 0),
                                                                       (2.0 ** 31, 1)]
    trainer.save_checkpoint()
    resumed_step = LossScaledStep(DynamicLossScaler())
    resumed = Trainer(symbol=tiny_graph(), data_names=["x", "s"], contexts=[mx.cpu(0)],
                      loader=ListLoader([batch()]), schedule=trainer.schedule,
                      experiment_dir=str(tmp_path), kvstore="local", step=resumed_step)
    assert resumed.resume() == 2
    assert resumed_step.scaler.state_dict() == {"loss_scale": 2.0 ** 30, "clean_steps": 0,
                                                "skipped_steps": 1}
    assert resumed.data_names == ["x", "s", LOSS_SCALE_INPUT]


def test_overflow_at_minimum_scale_stops_training(tmp_path):
    step = LossScaledStep(DynamicLossScaler(initial_scale=2.0 ** 31, min_scale=2.0 ** 31))
    with pytest.raises(NonFiniteLossError, match="iteration 0: gradients are not finite"):
        train(tmp_path, [batch(spike=True)], step)


# --- configuration ---------------------------------------------------------------------------

def test_fp16_config_gets_the_loss_scaled_step_and_bf16_the_plain_one():
    cfg = load_config(os.path.join(REPO, "config", "faster_r50v1_fpn_1x_fp16.py"),
                      ["mixed_precision.initial_loss_scale=1024",
                       "mixed_precision.growth_interval=50"])
    step = default_step(cfg)
    assert isinstance(step, LossScaledStep)
    assert (step.scaler.scale, step.scaler.growth_interval) == (1024, 50)
    bf16 = load_config(os.path.join(REPO, "config", "shapes", "faster_fpn.py"),
                       ["precision=bf16"])
    assert type(default_step(bf16)) is SgdStep


def test_fp16_on_cpu_fails_with_a_clear_message():
    fp16 = os.path.join(REPO, "config", "faster_r50v1_fpn_1x_fp16.py")
    with pytest.raises(ConfigError, match=r"precision=fp16 needs GPU contexts, got runtime.device"
                                          r"='cpu' .*precision=bf16 .*--gpus"):
        load_config(fp16, ["runtime.device=cpu"])
    cfg = load_config(fp16)  # a GPU config, run on CPU contexts by code
    with pytest.raises(PrecisionError, match=r"precision=fp16 needs GPU contexts, got contexts "
                                             r"\['cpu\(0\)', 'cpu\(1\)'\].*bf16.*--gpus"):
        build_trainer(cfg, None, None, [mx.cpu(0), mx.cpu(1)])
    with pytest.raises(PrecisionError, match="precision=fp16 needs GPU contexts"):
        run_test(cfg, None, [mx.cpu(0)])
    machines = load_config(fp16, ["runtime.num_machines=2", "runtime.kvstore=dist_sync"])
    with pytest.raises(PrecisionError, match="num_machines=2"):
        build_trainer(machines, None, None, [mx.gpu(0)])
