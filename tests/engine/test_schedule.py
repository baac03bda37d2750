"""The learning-rate schedule: warmup, multi-step decay, cosine, the MXNet adapter."""
import math

import pytest

from simpledet.config.faster_rcnn import FasterRcnnConfig
from simpledet.engine.schedule import LrSchedule, ScheduleLRScheduler


def step_schedule():
    return LrSchedule(base_lr=0.02, max_iter=100, warmup_iters=10, warmup_lr=0.02 / 3,
                      steps=(60, 80), decay=0.1)


def test_warmup_is_linear_from_warmup_lr():
    s = step_schedule()
    assert s.lr_at(0) == pytest.approx(0.02 / 3)
    assert s.lr_at(5) == pytest.approx(0.5 * 0.02 / 3 + 0.5 * 0.02)
    assert s.lr_at(9) == pytest.approx(0.1 * 0.02 / 3 + 0.9 * 0.02)
    assert s.lr_at(10) == pytest.approx(0.02)
    values = [s.lr_at(i) for i in range(11)]
    assert values == sorted(values)


def test_steps_multiply_by_decay_at_the_step_iteration():
    s = step_schedule()
    assert s.lr_at(59) == pytest.approx(0.02)
    assert s.lr_at(60) == pytest.approx(0.002)
    assert s.lr_at(79) == pytest.approx(0.002)
    assert s.lr_at(80) == pytest.approx(0.0002)
    assert s.lr_at(99) == pytest.approx(0.0002)


def test_no_warmup():
    s = LrSchedule(base_lr=0.1, max_iter=10)
    assert s.lr_at(0) == 0.1


def test_cosine_from_base_to_final_after_warmup():
    s = LrSchedule(base_lr=0.1, max_iter=110, warmup_iters=10, warmup_lr=0.01,
                   policy="cosine", final_lr=0.0)
    assert s.lr_at(0) == pytest.approx(0.01)
    assert s.lr_at(10) == pytest.approx(0.1)
    assert s.lr_at(60) == pytest.approx(0.05)
    assert s.lr_at(35) == pytest.approx(0.05 * (1 + math.cos(math.pi / 4)))
    assert s.lr_at(110) == pytest.approx(0.0, abs=1e-12)


def test_bad_schedules_are_refused():
    with pytest.raises(ValueError, match="policy"):
        LrSchedule(base_lr=0.1, max_iter=10, policy="poly")
    with pytest.raises(ValueError, match="increasing"):
        LrSchedule(base_lr=0.1, max_iter=10, steps=(8, 3))
    with pytest.raises(ValueError, match="iteration"):
        LrSchedule(base_lr=0.1, max_iter=10).lr_at(-1)


def test_from_config_uses_the_derived_values():
    cfg = FasterRcnnConfig()  # 8 devices x 2 images = batch 16
    s = LrSchedule.from_config(cfg)
    assert (s.base_lr, s.max_iter, s.steps, s.warmup_iters) == (0.02, 90000, (60000, 80000),
                                                                 500)
    assert s.warmup_lr == pytest.approx(0.02 / 3)


def test_mxnet_adapter_maps_update_count_to_iteration():
    s = step_schedule()
    adapter = ScheduleLRScheduler(s)
    # MXNet counts updates from begin_num_update + 1: update 61 is iteration 60.
    assert adapter(61) == pytest.approx(s.lr_at(60))
    assert adapter(1) == pytest.approx(s.lr_at(0))


def test_config_selects_the_cosine_policy():
    cfg = FasterRcnnConfig()
    assert LrSchedule.from_config(cfg).policy == "step"
    cfg.train.lr_policy = "cosine"
    s = LrSchedule.from_config(cfg)
    assert s.policy == "cosine"
    middle = (cfg.train.warmup_iters + cfg.max_iter) // 2  # the curve starts after warmup
    assert s.lr_at(middle) == pytest.approx(0.01, rel=1e-3)  # halfway down from 0.02
