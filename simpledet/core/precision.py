"""Precision names, their MXNet dtypes, and which devices can run them.

'fp32' is plain float32. 'fp16' and 'bf16' are mixed precision: parts of the graph compute in
float16 / bfloat16 while parameters, losses and the fragile ops stay float32 (see
``simpledet.models.precision``). MXNet 1.9 has no float16 GEMM or convolution on CPU, so fp16
needs GPU contexts; bf16 runs on CPU through MKLDNN (oneDNN) and on GPUs.
"""

PRECISIONS = ("fp32", "fp16", "bf16")
MXNET_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class PrecisionError(ValueError):
    """A precision that the chosen devices cannot run."""


def fp16_on_cpu_message(where):
    """The error text for precision=fp16 on CPU contexts; ``where`` names the contexts."""
    return (f"precision=fp16 needs GPU contexts, got {where}: MXNet has no float16 "
            "convolution/GEMM on CPU. Use precision=bf16 on CPU (--set precision=bf16), "
            "precision=fp32, or train on GPUs (--gpus 0,1,...)")


def check_precision_contexts(precision, contexts):
    """Raises PrecisionError when ``precision`` cannot run on ``contexts``.

    Args:
        precision: 'fp32', 'fp16' or 'bf16'.
        contexts: mx contexts (anything with a ``device_type``).
    """
    if precision not in PRECISIONS:
        raise PrecisionError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    cpus = [c for c in contexts if c.device_type == "cpu"]
    if precision == "fp16" and cpus:
        raise PrecisionError(fp16_on_cpu_message(f"contexts {[str(c) for c in contexts]}"))
