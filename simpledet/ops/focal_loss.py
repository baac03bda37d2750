"""Sigmoid focal loss for RetinaNet's classification head (``_contrib_SigmoidFocalLoss``)."""
import math
import numbers

import mxnet as mx
import numpy as np

import simpledet  # noqa: F401  (loads the operator library)

__all__ = ["sigmoid_focal_loss"]


def _check_number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def _check_ndarrays(logits, labels):
    if logits.ndim < 2 or logits.shape[-1] < 1:
        raise ValueError(f"logits must be (B, N, C) (or any (..., C)) with C >= 1, "
                         f"got {logits.shape}")
    if labels.shape != logits.shape[:-1]:
        raise ValueError(f"labels must be {logits.shape[:-1]} (logits {logits.shape} without "
                         f"the class axis), got {labels.shape}")
    if logits.dtype not in (np.float32, np.float64):
        raise TypeError(f"logits must be float32 or float64, got {np.dtype(logits.dtype).name}")
    if labels.dtype != logits.dtype:
        raise TypeError(f"labels must have the dtype of logits ({np.dtype(logits.dtype).name}), "
                        f"got {np.dtype(labels.dtype).name}")


def sigmoid_focal_loss(logits, labels, *, alpha=0.25, gamma=2.0, name=None):
    """Sigmoid focal loss (Lin et al. 2017), summed and normalized by the foreground count.

    With p = sigmoid(logit) for each anchor n and foreground class c (1..C), target t = 1 if
    ``labels[n] == c`` else 0, p_t = p if t else 1 - p and alpha_t = alpha if t else 1 - alpha:

        loss = sum over anchors with labels >= 0 and all C classes of
               -alpha_t * (1 - p_t) ** gamma * log(p_t),
        divided by max(number of anchors with a label in 1..C in the whole batch, 1).

    log(p_t) is evaluated through softplus forms, so extreme logits (e.g. +-100) give finite
    losses and gradients. The op counts the foreground anchors itself from ``labels``; with
    data parallelism every device normalizes by its own count. Sums run in float64 in a fixed
    order (deterministic). The output is the scalar loss, ready for ``mx.sym.MakeLoss``: the
    backward returns d loss / d logits times the incoming gradient (``labels`` get zero).

    Args:
        logits: (B, N, C) Symbol or NDArray, float32 (float64 works too, e.g. for
            ``check_numeric_gradient``): one logit per anchor and foreground class, no
            background logit; anchors in any order. Any (..., C) shape is accepted.
        labels: (B, N), the dtype of ``logits``: 0 background, 1..C the class, -1 (any
            negative) ignored: the anchor adds nothing to the loss and gets zero gradient.
            Values are read as the nearest integer. A label above C raises an error on the CPU;
            on the GPU (which cannot raise without stalling) it makes the loss NaN.
        alpha: weight of the positive term, in [0, 1] (negatives get 1 - alpha).
        gamma: focusing exponent, >= 0 (0 gives alpha-weighted binary cross-entropy).
        name: symbol name (symbolic inputs only).

    Returns:
        loss: (1,) Symbol or NDArray of the logits' dtype.

    Raises:
        TypeError: inputs of mixed kinds or wrong dtypes, non-numeric alpha/gamma.
        ValueError: alpha/gamma out of range, shapes that disagree.
    """
    alpha = _check_number("alpha", alpha)
    gamma = _check_number("gamma", gamma)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if gamma < 0.0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}")
    attrs = dict(alpha=repr(alpha), gamma=repr(gamma))
    if isinstance(logits, mx.sym.Symbol) and isinstance(labels, mx.sym.Symbol):
        return mx.sym.contrib.SigmoidFocalLoss(logits, labels, name=name, **attrs)
    if isinstance(logits, mx.nd.NDArray) and isinstance(labels, mx.nd.NDArray):
        if name is not None:
            raise ValueError("name applies to symbolic inputs only")
        _check_ndarrays(logits, labels)
        return mx.nd.contrib.SigmoidFocalLoss(logits, labels, **attrs)
    raise TypeError(f"logits and labels must both be mx.sym.Symbol or both mx.nd.NDArray, got "
                    f"{type(logits).__name__} and {type(labels).__name__}")
