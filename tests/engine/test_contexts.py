"""--gpus / --cpus -> config overrides -> mx contexts."""
import mxnet as mx
import pytest

from simpledet.config import FasterRcnnConfig, apply_overrides
from simpledet.engine.contexts import context_overrides, make_contexts


def runtime_after(overrides):
    cfg = FasterRcnnConfig()
    apply_overrides(cfg, overrides)
    return cfg


def test_gpus_and_cpus_become_runtime_settings_and_contexts():
    cfg = runtime_after(context_overrides(gpus="0,1"))
    assert (cfg.runtime.device, cfg.runtime.device_ids, cfg.total_batch) == ("gpu", (0, 1), 4)
    assert make_contexts(cfg.runtime) == [mx.gpu(0), mx.gpu(1)]
    cfg = runtime_after(context_overrides(cpus=3))
    assert make_contexts(cfg.runtime) == [mx.cpu(0), mx.cpu(1), mx.cpu(2)]
    assert cfg.lr == pytest.approx(0.02 * 6 / 16)  # lr follows the device count
    assert context_overrides() == []


@pytest.mark.parametrize("kwargs, message", [({"gpus": "0,a"}, "comma-separated"),
                                             ({"gpus": ","}, "comma-separated"),
                                             ({"cpus": 0}, ">= 1"),
                                             ({"gpus": "0", "cpus": 1}, "not both")])
def test_bad_device_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        context_overrides(**kwargs)
