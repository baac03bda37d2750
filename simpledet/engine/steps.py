"""One training step as an object the loop calls: forward, backward, checks, update.

The loop does not know how a step is carried out, so mixed precision (a loss-scale input,
overflow checks that skip the update and lower the scale) or other update schemes replace
:class:`SgdStep` without touching the loop, the hooks or the checkpoints.

A step (see :class:`Step`) may also change the graph it runs (``prepare_symbol``), add data
inputs the loader does not produce (``extra_data_names`` / ``extra_inputs``) and keep state
that checkpoints save and restore (``state_dict`` / ``load_state_dict``).
"""
import logging
import math
from dataclasses import dataclass

from simpledet.engine import loss_scale as ls

logger = logging.getLogger("simpledet.train")


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; raised before the update, so parameters stay finite."""


@dataclass
class StepResult:
    """What a step did.

    Attributes:
        iteration: the (0-based) iteration that ran.
        losses: loss name -> value (mean over contexts).
        lr: learning rate of the update.
        applied: False when the update was skipped (e.g. a loss-scale overflow).
        loss_scale: the fp16 loss scale the step ran with (None without loss scaling).
        skipped_steps: updates skipped so far in the run (loss-scale overflows).
        grad_norm: global L2 norm of the gradients, where a hook measured it (health.py).
    """

    iteration: int
    losses: dict
    lr: float
    applied: bool = True
    loss_scale: float | None = None
    skipped_steps: int = 0
    grad_norm: float | None = None

    @property
    def total_loss(self):
        return float(sum(self.losses.values()))


def check_finite_losses(losses, iteration):
    """Raises NonFiniteLossError naming the iteration and every non-finite loss."""
    bad = {name: value for name, value in losses.items() if not math.isfinite(value)}
    if bad:
        described = ", ".join(f"{name} = {value}" for name, value in bad.items())
        finite = ", ".join(f"{n} = {v:.4g}" for n, v in losses.items() if n not in bad)
        raise NonFiniteLossError(
            f"training diverged at iteration {iteration}: {described}"
            + (f" (other losses: {finite})" if finite else "")
            + "; the update was not applied. Lower the learning rate (--set "
            "train.lr_per_16_images=...), lengthen the warmup, set train.clip_grad_norm (e.g. "
            "10), or check the data of this batch")


class Step:
    """The step protocol; the defaults change nothing (no extra inputs, no state)."""

    extra_data_names = ()

    def prepare_symbol(self, symbol):
        """The graph the step trains, given the detector's train graph."""
        return symbol

    def extra_inputs(self, batch_size):
        """{name: numpy array} for each of ``extra_data_names``, for the next batch."""
        return {}

    def state_dict(self):
        """JSON-able state saved in checkpoints ({} for none)."""
        return {}

    def load_state_dict(self, state):
        """Restores ``state_dict()`` output (an empty dict keeps the current state)."""

    def __call__(self, module, data_batch, iteration, lr):
        raise NotImplementedError


class GradientRescale:
    """Sets the optimizer's ``rescale_grad`` for one update: the trainer's base value (1 / the
    contexts * machines that sum into the update) divided by the fp16 loss scale, times the
    global-norm clipping factor min(1, max_norm / ||g||) when max_norm is set.

    Global-norm clipping (mmdetection's ``grad_clip``) shrinks the whole update and keeps its
    direction, so one bad batch cannot throw the weights far away; an element-wise clip
    (the optimizer's ``clip_gradient``) only stops overflow. ||g|| is the norm of the
    batch-mean gradient on this machine (GraphModule.gradient_norm): with several machines
    each clips its own before the sum.

    Args:
        max_norm: None disables clipping.
    """

    def __init__(self, max_norm=None):
        self.max_norm = max_norm
        self._optimizer = None
        self._base = None

    def __call__(self, module, loss_scale=1.0):
        """Sets rescale_grad for the coming update; returns the unscaled gradient norm (None
        without clipping: it is not computed then)."""
        optimizer = module.optimizer
        if optimizer is not self._optimizer:  # remember the trainer's value once
            self._optimizer, self._base = optimizer, optimizer.rescale_grad
        factor, norm = 1.0 / loss_scale, None
        if self.max_norm is not None:
            norm = module.gradient_norm() / loss_scale
            if norm > self.max_norm:
                factor *= self.max_norm / norm
        optimizer.rescale_grad = self._base * factor
        return norm


class SgdStep(Step):
    """The fp32 step: forward + backward on every context, loss check, optimizer update.

    Args:
        max_grad_norm: clip the gradient's global L2 norm to this (None: no clipping); see
            GradientRescale.
    """

    def __init__(self, max_grad_norm=None):
        self.rescale = GradientRescale(max_grad_norm)

    def __call__(self, module, data_batch, iteration, lr):
        """Runs one step.

        Args:
            module: the bound GraphModule (train graph).
            data_batch: mx.io.DataBatch.
            iteration: 0-based iteration index.
            lr: the schedule's rate (for the result; the optimizer reads the schedule itself).

        Returns:
            StepResult.

        Raises:
            NonFiniteLossError: a loss is NaN or infinite (nothing is updated).
        """
        module.forward_backward(data_batch)
        losses = module.mean_outputs()  # a sync point: asynchronous MXNet errors surface here
        check_finite_losses(losses, iteration)
        grad_norm = self.rescale(module)
        module.update()
        return StepResult(iteration=iteration, losses=losses, lr=lr, grad_norm=grad_norm)


class LossScaledStep(Step):
    """The fp16 step: dynamic loss scaling around the SGD update.

    The graph gets a ``loss_scale`` input multiplying every loss (loss_scale.scale_losses);
    each step feeds the current scale, divides the reported losses by it, checks every
    gradient of every context for inf/nan, and then either updates with
    ``rescale_grad = base / scale`` (the gradients unscaled before clipping and the update) or
    skips the update, halves the scale and still advances the optimizer's update count (the lr
    schedule stays a function of the iteration). The scaler's state is checkpointed.

    Args:
        scaler: a loss_scale.DynamicLossScaler.
        max_grad_norm: clip the (unscaled) gradient's global L2 norm to this (None: no
            clipping); see GradientRescale.
    """

    extra_data_names = (ls.LOSS_SCALE_INPUT,)

    def __init__(self, scaler, max_grad_norm=None):
        self.scaler = scaler
        self.rescale = GradientRescale(max_grad_norm)

    def prepare_symbol(self, symbol):
        return ls.scale_losses(symbol)

    def extra_inputs(self, batch_size):
        return ls.loss_scale_inputs(self.scaler.scale, batch_size)

    def state_dict(self):
        return self.scaler.state_dict()

    def load_state_dict(self, state):
        if state:
            self.scaler.load_state_dict(state)

    def __call__(self, module, data_batch, iteration, lr):
        """Runs one step (see the class docstring); the batch's loss_scale input must hold the
        current scale (``extra_inputs`` gives it).

        Raises:
            NonFiniteLossError: a loss is NaN or infinite (forward overflow or divergence), or
                the gradients overflow at the minimum loss scale.
        """
        scale = self.scaler.scale
        module.forward_backward(data_batch)
        losses = {name: value / scale for name, value in module.mean_outputs().items()}
        check_finite_losses(losses, iteration)
        try:
            applied = self.scaler.update(ls.all_finite(module.gradient_arrays()))
        except ls.GradientOverflowError as err:
            raise NonFiniteLossError(f"training diverged at iteration {iteration}: {err}; the "
                                     "update was not applied") from None
        grad_norm = None
        if applied:
            grad_norm = self.rescale(module, loss_scale=scale)
            module.update()
        else:
            ls.advance_update_count(module.optimizer)
            logger.warning("iteration %d: gradient overflow at loss scale %g; update skipped, "
                           "scale lowered to %g", iteration, scale, self.scaler.scale)
        return StepResult(iteration=iteration, losses=losses, lr=lr, applied=applied,
                          loss_scale=scale, skipped_steps=self.scaler.skipped_steps,
                          grad_norm=grad_norm)
