"""Mixed precision of a detector graph: chosen components compute in float16 / bfloat16.

How it works: a detector builds its graph in float32, as always, and reports each component's
boundary to a :class:`PrecisionPlan` (``plan.mark("neck", inputs, outputs)``: the op nodes
between them are that component's). ``plan.apply(symbol)`` then runs MXNet's AMP graph pass
(``mxnet.contrib.amp.convert_symbol``) with every op node outside the low-precision components
excluded, so:

- inside a listed component, convolutions and fc layers run in the low dtype, and the ops that
  follow them do too where MXNet's AMP op lists allow it (ReLU, BatchNorm, pooling, sums);
  the lists keep numerically sensitive ops (softmax, norms, GroupNorm, SyncBatchNorm, reshape
  for bf16, ...) in float32 with casts around them;
- every other op (losses, sigmoid/softmax, proposal generation and sampling, RoIAlign, box
  decoding, NMS: in short everything outside the listed components) runs in float32: the pass
  casts its low-precision inputs back to float32. The C++ ops accept only float32, which is
  therefore guaranteed;
- parameters stay float32 and are cast inside the graph (``amp_cast``, whose gradient is cast
  back), so ``list_arguments`` is unchanged, checkpoints are float32, and the optimizer updates
  float32 master weights.

Why this and not hand-written Cast nodes at component boundaries: the builders stay
precision-agnostic (no weight casts inside every conv), MXNet's lists know which ops each
backend supports in bf16/fp16, and with precision 'fp32' nothing is touched, so the fp32 graph
is byte-for-byte the graph without this module. ``Symbol.tojson()`` drops amp_cast nodes by
default (``remove_amp_cast=True``): inspect a converted graph with :func:`output_dtypes`.
"""
import json

import mxnet as mx
import numpy as np

from simpledet.core.precision import MXNET_DTYPES, PRECISIONS

__all__ = ["PrecisionPlan", "op_names", "output_dtypes"]


def op_names(symbols):
    """Names of the op nodes (not variables) that ``symbols`` depend on, their own included."""
    symbols = list(symbols)
    if not symbols:
        return set()
    nodes = json.loads(mx.sym.Group(symbols).tojson())["nodes"]
    return {node["name"] for node in nodes if node["op"] != "null"}


def output_dtypes(symbol, **input_dtypes):
    """{internal output name: numpy dtype name} of every node output of ``symbol``.

    Args:
        symbol: the graph.
        **input_dtypes: dtype of each data input, e.g. ``data="float32"``.

    Returns:
        dict, e.g. {"conv0_output": "bfloat16", "rpn_proposal_output0": "float32", ...}
        (MXNet reports bfloat16 as a structured numpy type; it is named "bfloat16" here).
    """
    internals = symbol.get_internals()
    _, types, _ = internals.infer_type(**input_dtypes)
    return {name: _dtype_name(t) for name, t in zip(internals.list_outputs(), types)}


def _dtype_name(dtype):
    if dtype is None:
        return "unknown"
    described = np.dtype(dtype)
    return "bfloat16" if described.names == ("bfloat16",) else described.name


class PrecisionPlan:
    """Records which op nodes belong to the low-precision components of one graph build.

    A plan serves one symbol: create a new one for each ``get_*_symbol`` call.

    Args:
        precision: 'fp32' (the plan does nothing), 'fp16' or 'bf16'.
        components: names of the components to run in low precision, e.g.
            ('backbone', 'neck', 'rpn_head', 'bbox_head'); ``mark`` ignores others.
    """

    def __init__(self, precision="fp32", components=()):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision
        self.components = tuple(components)
        self.low_precision_ops = {}  # component -> set of op node names

    @classmethod
    def from_config(cls, cfg):
        """The plan of ``cfg.precision`` and ``cfg.mixed_precision.components``."""
        return cls(cfg.precision, cfg.mixed_precision.components)

    @property
    def enabled(self):
        return self.precision != "fp32"

    def mark(self, component, inputs, outputs):
        """Declares the op nodes between ``inputs`` and ``outputs`` to be ``component``'s.

        Args:
            component: its name, e.g. 'backbone'.
            inputs: Symbols the component was built on (the previous component's outputs).
            outputs: Symbols it returned.
        """
        if not self.enabled or component not in self.components:
            return
        nodes = op_names(outputs) - op_names(inputs)
        self.low_precision_ops.setdefault(component, set()).update(nodes)

    def apply(self, symbol, data_names):
        """The graph with the marked components in low precision (``symbol`` itself for fp32).

        Args:
            symbol: the float32 graph, built after the ``mark`` calls.
            data_names: its data inputs (float32; everything else is a parameter).

        Returns:
            Symbol with the same arguments, auxiliary states and outputs.
        """
        if not self.enabled:
            return symbol
        from mxnet.contrib import amp

        low = set().union(*self.low_precision_ops.values())
        excluded = sorted(op_names([symbol]) - low)
        return amp.convert_symbol(symbol, target_dtype=MXNET_DTYPES[self.precision],
                                  data_names=list(data_names), excluded_sym_names=excluded,
                                  cast_optional_params=False)
