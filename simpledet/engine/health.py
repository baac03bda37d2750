"""Training health: the gradient norm in the log, and a dead network stopped with a message.

A diverged from-scratch run often does not reach NaN: with gradient clipping, or after a
spike, its ReLUs die and the network's output stops depending on its input. The losses then
sit at a plateau (the class priors) while the run carries on for hours. Such a network has a
tell-tale sign that a healthy one never shows: the gradients of most of its conv / fc weights
are exactly zero, batch after batch. :class:`HealthHook` checks for it every ``interval``
iterations and stops the run (``DeadTrainingError``) instead of training on silently.
"""
import logging

from simpledet.engine.hooks import Hook

logger = logging.getLogger("simpledet.train")

DEAD_FRACTION = 0.5  # share of weight arrays with an all-zero gradient that means "dead"
DEAD_CHECKS = 3  # consecutive checks that must agree before the run is stopped
_EXAMPLES = 4


class DeadTrainingError(FloatingPointError):
    """The network stopped learning: most weights get exactly zero gradient."""


def _is_weight(name):
    """Conv / fc weights: the arrays a live ReLU network sends gradient to on every batch
    (biases, norm affines and per-class rows can legitimately see none)."""
    return name.endswith("_weight")


class HealthHook(Hook):
    """Every ``interval`` iterations: computes the global gradient norm (stored on the step
    result as ``grad_norm``, so the logging hook after it reports it) and counts the weight
    arrays whose gradient is all zeros; ``DEAD_CHECKS`` checks in a row with at least
    ``DEAD_FRACTION`` of them zero raise DeadTrainingError (or only log an error with
    ``stop=False``).

    Args:
        interval: check every this many iterations (the log interval).
        stop: raise when dead (True) or log an error and train on (False).
    """

    def __init__(self, interval, stop=True):
        self.interval = int(interval)
        self.stop = bool(stop)
        self._dead_checks = 0

    def before_train(self, trainer):
        self._dead_checks = 0

    def after_step(self, trainer, result):
        if trainer.iteration % self.interval or not result.applied:
            return
        import mxnet as mx

        zero, weights = [], 0
        for name, grad in trainer.module.named_gradients():
            if _is_weight(name):
                weights += 1
                if float(mx.nd.max(mx.nd.abs(grad)).asscalar()) == 0.0:
                    zero.append(name)
        if result.grad_norm is None:  # the step measures it when it clips
            result.grad_norm = trainer.module.gradient_norm()
        if weights and len(zero) >= DEAD_FRACTION * weights:
            self._dead_checks += 1
        else:
            self._dead_checks = 0
        if self._dead_checks < DEAD_CHECKS:
            return
        message = (f"training is dead at iteration {trainer.iteration}: {len(zero)} of {weights} "
                   f"weight arrays got exactly zero gradient in {DEAD_CHECKS} checks in a row "
                   f"(e.g. {', '.join(zero[:_EXAMPLES])}), so the network's output no longer "
                   "depends on its input (dead ReLUs, usually after a divergence). Lower the "
                   "learning rate (--set train.lr_per_16_images=...), lengthen the warmup, or "
                   "train from scratch with backbone.normalizer=gn")
        if self.stop:
            raise DeadTrainingError(message)
        logger.error("%s", message)
        self._dead_checks = 0
