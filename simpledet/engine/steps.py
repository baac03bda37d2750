"""One training step as an object the loop calls: forward, backward, checks, update.

The loop does not know how a step is carried out, so mixed precision (a loss-scale input,
overflow checks that skip the update and lower the scale) or other update schemes replace
:class:`SgdStep` without touching the loop, the hooks or the checkpoints.
"""
import math
from dataclasses import dataclass


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
    """

    iteration: int
    losses: dict
    lr: float
    applied: bool = True

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
            "train.lr_per_16_images=...), lengthen the warmup, enable train.clip_gradient, or "
            "check the data of this batch")


class SgdStep:
    """The fp32 step: forward + backward on every context, loss check, optimizer update."""

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
        module.update()
        return StepResult(iteration=iteration, losses=losses, lr=lr)
