"""Weight decay through the trainer's optimizer: MXNet's SGD decays only parameters whose name
ends in ``_weight`` or ``_gamma`` (simpledet.engine.trainer's docstring). With every gradient
exactly 0 only decay moves a parameter, so biases and BatchNorm betas must stay put while
weights and gammas shrink by the SGD-with-momentum recursion."""
import mxnet as mx
import numpy as np

from simpledet.engine.schedule import LrSchedule
from simpledet.engine.trainer import Trainer

LR, WD, MOMENTUM, STEPS, START = 0.1, 0.5, 0.9, 3, 0.5


class ListLoader:
    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def zero_gradient_graph():
    """conv (weight, bias) -> BatchNorm (gamma, beta) -> fc (weight, bias); the loss is 0 times
    the output, so every parameter's gradient is exactly 0."""
    x = mx.sym.Convolution(mx.sym.var("data"), num_filter=2, kernel=(3, 3), pad=(1, 1),
                           name="conv")
    x = mx.sym.BatchNorm(x, fix_gamma=False, use_global_stats=True, name="bn")
    x = mx.sym.FullyConnected(x, num_hidden=3, name="fc")
    return mx.sym.MakeLoss(0 * mx.sym.sum(x), name="zero_loss")


def decayed(value, steps):
    """SGD with momentum on a zero gradient: mom = m * mom - lr * wd * w; w += mom."""
    mom = 0.0
    for _ in range(steps):
        mom = MOMENTUM * mom - LR * WD * value
        value = value + mom
    return value


def test_only_weights_and_gammas_are_decayed(tmp_path):
    symbol = zero_gradient_graph()
    shapes = dict(zip(symbol.list_arguments(), symbol.infer_shape(data=(2, 3, 4, 4))[0]))
    params = {name: mx.nd.full(shape, START) for name, shape in shapes.items() if name != "data"}
    batches = [{"data": np.ones((2, 3, 4, 4), np.float32)} for _ in range(STEPS)]
    trainer = Trainer(symbol=symbol, data_names=["data"], contexts=[mx.cpu(0)],
                      loader=ListLoader(batches), schedule=LrSchedule(base_lr=LR, max_iter=STEPS),
                      experiment_dir=str(tmp_path), momentum=MOMENTUM, weight_decay=WD,
                      initial_params=(params, {}))
    trainer.train()
    arg_params, _ = trainer.module.get_params()
    values = {name: value.asnumpy() for name, value in arg_params.items()}
    assert sorted(values) == ["bn_beta", "bn_gamma", "conv_bias", "conv_weight", "fc_bias",
                              "fc_weight"]
    expected = decayed(START, STEPS)
    assert expected < 0.9 * START  # the decay is visible
    for name in ("conv_weight", "bn_gamma", "fc_weight"):
        np.testing.assert_allclose(values[name], expected, rtol=1e-6, err_msg=name)
    for name in ("conv_bias", "bn_beta", "fc_bias"):
        np.testing.assert_array_equal(values[name], START, err_msg=name)
