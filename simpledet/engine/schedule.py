"""The learning-rate schedule: linear warmup, then multi-step decay or a cosine curve.

Iterations are 0-based: ``lr_at(i)`` is the rate used by the update of iteration i. The
schedule is a pure function of the iteration, so a resumed run follows it exactly; the
optimizer reads it through :class:`ScheduleLRScheduler` (an MXNet ``LRScheduler``), which also
works when the optimizer runs on a distributed kvstore's servers.
"""
import math
from dataclasses import dataclass

POLICIES = ("step", "cosine")


@dataclass(frozen=True)
class LrSchedule:
    """Learning rate as a function of the iteration.

    Attributes:
        base_lr: the rate after warmup (before any decay).
        max_iter: training length (the cosine curve reaches final_lr there).
        warmup_iters: iterations 0..warmup_iters-1 ramp linearly from warmup_lr towards
            base_lr (SimpleDet's "gradual" warmup); 0 disables warmup.
        warmup_lr: the rate at iteration 0.
        steps: iterations at which the step policy multiplies the rate by decay.
        decay: the step factor.
        policy: "step" or "cosine".
        final_lr: the cosine policy's rate at max_iter.
    """

    base_lr: float
    max_iter: int
    warmup_iters: int = 0
    warmup_lr: float = 0.0
    steps: tuple = ()
    decay: float = 0.1
    policy: str = "step"
    final_lr: float = 0.0

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"lr policy must be one of {POLICIES}, got {self.policy!r}")
        if self.base_lr <= 0 or self.max_iter < 1:
            raise ValueError(f"base_lr must be > 0 and max_iter >= 1, got {self.base_lr} and "
                             f"{self.max_iter}")
        if list(self.steps) != sorted(self.steps):
            raise ValueError(f"lr steps must be increasing, got {self.steps}")

    @classmethod
    def from_config(cls, cfg):
        """The schedule of a DetectorConfig (cfg.lr, cfg.warmup_lr, cfg.lr_steps,
        cfg.train.lr_policy, ...)."""
        return cls(base_lr=cfg.lr, max_iter=cfg.max_iter, warmup_iters=cfg.train.warmup_iters,
                   warmup_lr=cfg.warmup_lr, steps=tuple(cfg.lr_steps), decay=cfg.train.lr_decay,
                   policy=cfg.train.lr_policy)

    def _after_warmup(self, iteration):
        if self.policy == "step":
            passed = sum(1 for step in self.steps if iteration >= step)
            return self.base_lr * self.decay ** passed
        # cosine from the end of warmup to max_iter
        span = max(1, self.max_iter - self.warmup_iters)
        progress = min(1.0, max(0.0, (iteration - self.warmup_iters) / span))
        return self.final_lr + 0.5 * (self.base_lr - self.final_lr) * (
            1.0 + math.cos(math.pi * progress))

    def lr_at(self, iteration):
        """The learning rate of (0-based) iteration ``iteration``."""
        if iteration < 0:
            raise ValueError(f"iteration must be >= 0, got {iteration}")
        target = self._after_warmup(iteration)
        if iteration < self.warmup_iters:
            alpha = iteration / self.warmup_iters
            return self.warmup_lr * (1.0 - alpha) + target * alpha
        return target


class ScheduleLRScheduler:
    """Adapts an :class:`LrSchedule` to MXNet's ``lr_scheduler(num_update)`` protocol.

    MXNet's optimizer increments ``num_update`` before it asks for the rate, starting from
    ``begin_num_update`` (the resumed iteration), so update k of a run (1-based count) is
    iteration ``num_update - 1``. Picklable, so dist kvstore servers can run it.
    """

    def __init__(self, schedule):
        self.schedule = schedule
        self.base_lr = schedule.base_lr  # MXNet's optimizer sets it to its learning_rate

    def __call__(self, num_update):
        return self.schedule.lr_at(max(0, int(num_update) - 1))
