"""Many devices on one machine, tested with CPU contexts (the code path of --gpus 0,1 is the
same: batch split along axis 0, kvstore 'device' summing gradients, rescale_grad = 1/contexts).

The equivalence is tested on a small hand-made graph run by the real Trainer, because it is a
property of the engine: the detectors normalize each loss by the samples on its own device and
sample RoIs with per-device random states, so a detector's update over 2 x 1 images equals the
one over 1 x 2 images only in expectation.
"""
import json

import mxnet as mx
import numpy as np
import pytest

from simpledet.config import FasterRcnnConfig
from simpledet.detectors import FasterRcnn
from simpledet.engine.schedule import LrSchedule
from simpledet.engine.trainer import Trainer, build_trainer
from simpledet.models.layers.normalizer import Normalizer

CHANNELS = 32  # GroupNorm's 32 groups need 32 channels
# float32 reductions in another order (one batch of 2 in the graph vs two contexts summed in
# the kvstore) move results by a few ulps per step (measured: at most 1.2e-7 absolute on values
# of order 1); 1e-5 relative / 1e-6 absolute is far below a real difference (per-device
# BatchNorm on 2 contexts moves parameters by 1e-2).
RTOL, ATOL = 1e-5, 1e-6


class ListLoader:
    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)


def tiny_net(normalizer):
    """conv -> norm -> relu -> conv -> norm -> mean squared error to a target (per-image mean,
    so the loss over a batch is the mean of the images' losses)."""
    data, target = mx.sym.var("data"), mx.sym.var("target")
    x = mx.sym.Convolution(data, num_filter=CHANNELS, kernel=(3, 3), pad=(1, 1), name="conv1")
    x = mx.sym.relu(normalizer(x, "norm1", CHANNELS), name="relu1")
    x = mx.sym.Convolution(x, num_filter=CHANNELS, kernel=(3, 3), pad=(1, 1), name="conv2")
    x = normalizer(x, "norm2", CHANNELS)
    loss = mx.sym.mean(mx.sym.square(x - target), name="mse")
    return mx.sym.MakeLoss(loss, name="mse_loss")


def batches(count=2, images=2):
    rng = np.random.default_rng(0)
    return [{"data": rng.standard_normal((images, 3, 6, 6)).astype(np.float32),
             "target": rng.standard_normal((images, CHANNELS, 6, 6)).astype(np.float32)}
            for _ in range(count)]


def train(tmp_path, normalizer, contexts, iterations=2):
    trainer = Trainer(symbol=tiny_net(normalizer), data_names=["data", "target"],
                      contexts=contexts, loader=ListLoader(batches(iterations)),
                      schedule=LrSchedule(base_lr=0.5, max_iter=iterations),
                      experiment_dir=str(tmp_path), kvstore="device", momentum=0.9,
                      weight_decay=1e-3, seed=3)
    result = trainer.train()
    mx.nd.waitall()  # BatchNorm writes its moving statistics without telling the engine
    arg_params, aux_params = trainer.module.get_params()
    return result, {k: v.asnumpy() for k, v in {**arg_params, **aux_params}.items()}


def max_relative_difference(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]) / (np.abs(b[k]) + ATOL))) for k in a)


def assert_same(a, b):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=RTOL, atol=ATOL, err_msg=name)


@pytest.mark.parametrize("kind", ["gn", "fixbn"])
def test_two_contexts_one_image_each_equal_one_context_two_images(tmp_path, kind):
    """No batch statistics (GroupNorm, frozen BN): two updates with momentum and weight
    decay are the same on 2 x 1 images as on 1 x 2."""
    one_result, one = train(tmp_path / "one", Normalizer(kind), [mx.cpu(0)])
    two_result, two = train(tmp_path / "two", Normalizer(kind), [mx.cpu(0), mx.cpu(1)])
    assert_same(two, one)
    assert two_result.losses["mse_loss"] == pytest.approx(one_result.losses["mse_loss"],
                                                          rel=RTOL)
    initial = train(tmp_path / "none", Normalizer(kind), [mx.cpu(0)], iterations=1)[1]
    assert max_relative_difference(one, initial) > 1e-2  # the updates did something


@pytest.mark.timeout(120, method="thread")  # a SyncBatchNorm barrier that never fills hangs
def test_syncbn_on_two_contexts_equals_bn_on_one_context_with_both_images(tmp_path):
    """SyncBatchNorm over 2 contexts x 1 image computes the batch statistics of both images,
    as BatchNorm on 1 context x 2 images: same losses, parameters and moving statistics after
    an update; per-device BatchNorm on 2 contexts does not."""
    bn_result, bn = train(tmp_path / "bn", Normalizer("bn"), [mx.cpu(0)], iterations=1)
    sync_result, sync = train(tmp_path / "sync", Normalizer("syncbn", num_devices=2),
                              [mx.cpu(0), mx.cpu(1)], iterations=1)
    assert_same(sync, bn)
    assert sync_result.losses["mse_loss"] == pytest.approx(bn_result.losses["mse_loss"],
                                                           rel=RTOL)
    _, per_device = train(tmp_path / "per_device", Normalizer("bn"), [mx.cpu(0), mx.cpu(1)],
                          iterations=1)
    assert max_relative_difference(per_device, bn) > 1e-3


def test_syncbn_layers_have_unique_keys_and_the_config_device_count():
    cfg = FasterRcnnConfig()
    cfg.backbone.depth = 18
    cfg.backbone.normalizer = "syncbn"
    cfg.runtime.device_ids = (0, 1, 2)
    cfg.backbone.frozen_stages = 0  # frozen stages would use stored statistics instead
    cfg.freeze()
    symbol = mx.sym.Group(list(FasterRcnn(cfg).backbone.get_features(mx.sym.var("data")).values()))
    nodes = [n for n in json.loads(symbol.tojson())["nodes"] if n["op"] == "_contrib_SyncBatchNorm"]
    assert len(nodes) == 20  # stem + 2 per basic unit x 8 + 3 projection shortcuts
    keys = [n["attrs"]["key"] for n in nodes]
    assert len(set(keys)) == len(keys)
    assert {n["attrs"]["ndev"] for n in nodes} == {"3"}


def test_syncbn_device_count_must_match_the_contexts():
    cfg = FasterRcnnConfig()
    cfg.backbone.normalizer = "syncbn"
    cfg.runtime.device, cfg.runtime.device_ids = "cpu", (0, 1)
    cfg.freeze()
    with pytest.raises(ValueError, match=r"synchronizes 2 devices .* runs on 1 contexts"):
        build_trainer(cfg, None, None, [mx.cpu(0)])
