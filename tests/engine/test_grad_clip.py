"""Global-norm gradient clipping (train.clip_grad_norm) in the fp32 and fp16 steps."""
import mxnet as mx
import numpy as np
import pytest
from test_loss_scale import batch, tiny_graph, train

from simpledet.config import load_config
from simpledet.engine.loss_scale import DynamicLossScaler
from simpledet.engine.module import GraphModule, to_data_batch
from simpledet.engine.steps import LossScaledStep, SgdStep
from simpledet.engine.trainer import default_step

WARMUP_LR, WD = 0.01, 1e-4  # the harness's lr at iteration 0 and the Trainer's weight decay


def first_gradient(record):
    """fc_weight's applied gradient of the first update (momentum starts at 0): minus the step
    over the lr, weight decay taken out."""
    w0, w1 = record.initial_weights, record.weights[0]
    return (w0 - w1) / WARMUP_LR - WD * w0


def test_clipping_scales_the_update_to_the_norm(tmp_path):
    batches = [batch(seed=i) for i in range(3)]
    _, plain = train(tmp_path / "plain", batches, SgdStep())
    _, measured = train(tmp_path / "measured", batches, SgdStep(max_grad_norm=1e9))
    for a, b in zip(plain.weights, measured.weights):  # below the norm: no change at all
        np.testing.assert_array_equal(a, b)
    norm = measured.results[0].grad_norm
    assert norm > 0 and plain.results[0].grad_norm is None  # only measured when clipping
    _, clipped = train(tmp_path / "clipped", batches, SgdStep(max_grad_norm=norm / 4))
    assert clipped.results[0].grad_norm == pytest.approx(norm)  # reported before clipping
    # float32 weights: recovering the gradient from them loses ~1e-7 / lr
    np.testing.assert_allclose(first_gradient(clipped), first_gradient(plain) / 4, atol=3e-5)


def test_fp16_step_clips_the_unscaled_gradient(tmp_path):
    batches = [batch(seed=i) for i in range(3)]
    _, fp32 = train(tmp_path / "fp32", batches, SgdStep(max_grad_norm=0.05))
    _, fp16 = train(tmp_path / "fp16", batches,
                    LossScaledStep(DynamicLossScaler(initial_scale=2.0 ** 12), max_grad_norm=0.05))
    assert fp32.results[0].grad_norm > 0.05  # clipping acts
    for a, b in zip(fp32.weights, fp16.weights):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert [r.grad_norm for r in fp16.results] == pytest.approx(
        [r.grad_norm for r in fp32.results], rel=1e-5)


def test_gradient_norm_is_the_batch_mean_over_contexts():
    data = batch(seed=3)
    norms = []
    for contexts in ([mx.cpu(0)], [mx.cpu(0), mx.cpu(1)]):
        module = GraphModule(tiny_graph(), ["x", "s"], contexts)
        data_batch = to_data_batch(data, ["x", "s"])
        module.bind(data_batch)
        module.init_params(mx.init.Constant(0.3))
        module.forward_backward(data_batch)
        norms.append(module.gradient_norm())
    assert norms[0] > 0
    assert norms[1] == pytest.approx(norms[0], rel=1e-6)


def test_config_switch_reaches_the_step():
    cfg = load_config("config/shapes/faster_fpn.py", ["train.clip_grad_norm=10"])
    assert default_step(cfg).rescale.max_norm == 10.0
    cfg = load_config("config/shapes/faster_fpn.py", ["precision=bf16", "train.clip_grad_norm=5"])
    assert default_step(cfg).rescale.max_norm == 5.0


def test_gradient_norm_matches_numpy():
    data = batch(seed=5)
    module = GraphModule(tiny_graph(), ["x", "s"], [mx.cpu(0)])
    data_batch = to_data_batch(data, ["x", "s"])
    module.bind(data_batch)
    module.init_params(mx.init.Uniform(0.5))
    module.forward_backward(data_batch)
    grads = [g.asnumpy().astype(np.float64) for _, g in module.named_gradients()]
    expected = np.sqrt(sum(float((g ** 2).sum()) for g in grads))
    assert expected > 0
    assert module.gradient_norm() == pytest.approx(expected, rel=1e-4)
