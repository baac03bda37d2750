"""Dynamic loss scaling for fp16 training: the scale state machine, the graph input that carries
the scale into the losses, and the overflow check over gradients.

float16 gradients underflow to zero below ~6e-8; multiplying the losses by a large scale S
shifts every gradient up by S. The optimizer divides by S again (``rescale_grad``) before
clipping and the update, so the step is the unscaled one. When a gradient overflows (inf/nan)
the update is skipped and S halved; after ``growth_interval`` clean steps S doubles, so it
follows the largest scale the gradients tolerate.

How the scale enters the graph: ``MakeLoss`` ignores head gradients, so S cannot be passed to
``backward``; :func:`scale_losses` instead multiplies each loss by a gradient-free data input
``loss_scale`` (B,) before its MakeLoss. A data input (one value per image, all equal) is split
over contexts like every other input and changes each step without rebinding; the forward
outputs are then S * loss, which the step divides by S for reporting. Nothing in the losses is
a constant scale.
"""
import json
import logging
from collections import defaultdict

import numpy as np

logger = logging.getLogger("simpledet.train")

LOSS_SCALE_INPUT = "loss_scale"
_FINITE_CHUNK = 200  # arrays per multi_all_finite call


class GradientOverflowError(FloatingPointError):
    """Gradients stayed non-finite down to the minimum loss scale: the run diverged."""


class DynamicLossScaler:
    """The loss-scale state: halve on overflow, double after ``growth_interval`` clean steps.

    Args:
        initial_scale: the first scale (a power of two keeps scaling exact).
        growth_interval: consecutive finite steps before the scale doubles.
        min_scale: an overflow at this scale raises GradientOverflowError instead of halving.

    Attributes:
        scale: the current scale.
        clean_steps: finite steps since the last change of the scale.
        skipped_steps: overflowed (skipped) steps so far.
    """

    def __init__(self, initial_scale=2.0 ** 16, growth_interval=2000, min_scale=1.0):
        if initial_scale <= 0 or min_scale <= 0 or growth_interval < 1:
            raise ValueError(f"need initial_scale > 0, min_scale > 0, growth_interval >= 1; got "
                             f"{initial_scale}, {min_scale}, {growth_interval}")
        self.scale = float(initial_scale)
        self.growth_interval = int(growth_interval)
        self.min_scale = float(min_scale)
        self.clean_steps = 0
        self.skipped_steps = 0

    @classmethod
    def from_config(cls, mixed_precision_cfg):
        """The scaler of ``cfg.mixed_precision``."""
        return cls(mixed_precision_cfg.initial_loss_scale, mixed_precision_cfg.growth_interval,
                   mixed_precision_cfg.min_loss_scale)

    def update(self, finite):
        """Moves the state after a step whose gradients were (not) all finite.

        Returns:
            True when the step's update should be applied, False when it must be skipped.

        Raises:
            GradientOverflowError: an overflow at the minimum scale.
        """
        if finite:
            self.clean_steps += 1
            if self.clean_steps >= self.growth_interval:
                self.scale *= 2.0
                self.clean_steps = 0
            return True
        if self.scale <= self.min_scale:
            raise GradientOverflowError(
                f"gradients are not finite even at the minimum loss scale {self.min_scale:g} "
                f"({self.skipped_steps} steps skipped so far): training diverged. Lower the "
                "learning rate, set train.clip_grad_norm, or train with precision=fp32")
        self.scale = max(self.scale / 2.0, self.min_scale)
        self.clean_steps = 0
        self.skipped_steps += 1
        return False

    def state_dict(self):
        return {"loss_scale": self.scale, "clean_steps": self.clean_steps,
                "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state):
        self.scale = float(state["loss_scale"])
        self.clean_steps = int(state["clean_steps"])
        self.skipped_steps = int(state["skipped_steps"])


def scale_losses(symbol, input_name=LOSS_SCALE_INPUT):
    """The train graph with every MakeLoss input multiplied by the ``input_name`` data input.

    Args:
        symbol: a Group of MakeLoss outputs (or one MakeLoss).
        input_name: the new data input, shape (B,) float32 with every entry the scale.

    Returns:
        Symbol with the same outputs (names and MakeLoss parameters), one more input.

    Raises:
        ValueError: an output is not a MakeLoss.
    """
    import mxnet as mx

    scale_input = mx.sym.var(input_name, dtype="float32")
    # One value per image so Module can split it over contexts; every entry is the same.
    scale = mx.sym.BlockGrad(mx.sym.slice_axis(scale_input, axis=0, begin=0, end=1,
                                               name=f"{input_name}_first"),
                             name=f"{input_name}_blockgrad")
    outputs = []
    for output in symbol:
        graph = json.loads(output.tojson())
        node = graph["nodes"][graph["heads"][0][0]]
        if node["op"] != "MakeLoss":
            raise ValueError(f"loss scaling needs MakeLoss outputs; {node['name']!r} is a "
                             f"{node['op']!r}")
        loss = output.get_children()
        scaled = mx.sym.broadcast_mul(loss, scale, name=f"{node['name']}_scaled")
        outputs.append(mx.sym.MakeLoss(scaled, name=node["name"], **node.get("attrs", {})))
    return mx.sym.Group(outputs)


def all_finite(arrays):
    """True when every NDArray in ``arrays`` is free of inf and nan (one sync per context)."""
    import mxnet as mx

    by_context = defaultdict(list)
    for array in arrays:
        by_context[array.context].append(array)
    for context, group in by_context.items():
        flag = mx.nd.ones((1,), ctx=context)
        for start in range(0, len(group), _FINITE_CHUNK):
            chunk = group[start:start + _FINITE_CHUNK]
            mx.nd.multi_all_finite(*chunk, num_arrays=len(chunk), init_output=False, out=flag)
        if not bool(flag.asnumpy()[0]):
            return False
    return True


def advance_update_count(optimizer):
    """Counts a skipped step as an update in MXNet's optimizer, so the lr schedule (read by
    ``num_update``) stays aligned with the iteration, also across a resume.

    MXNet keeps ``num_update``, ``begin_num_update`` (the start of indices seen later) and one
    count per parameter index and device; all advance by one, as an applied update would.
    """
    optimizer.begin_num_update += 1
    optimizer.num_update += 1
    for counts in optimizer._all_index_update_counts.values():
        for index in counts:
            counts[index] += 1


def loss_scale_inputs(scale, batch_size):
    """The ``loss_scale`` input of one batch: (batch_size,) float32, every entry ``scale``."""
    return {LOSS_SCALE_INPUT: np.full((int(batch_size),), scale, dtype=np.float32)}
