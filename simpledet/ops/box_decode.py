"""Decoding a box head's deltas into the next Cascade R-CNN stage's rois (``_contrib_BoxDecode``).

Not MXNet's own ``contrib.box_decode``: that one decodes (B, N, 4) anchors without a batch
index, measures widths as x2 - x1 and does not clip; this op keeps the rois' layout, the "+1"
convention of every simpledet op and clips each roi to its own image.
"""
import math
import numbers

import mxnet as mx
import numpy as np

import simpledet  # noqa: F401  (loads the operator library)

__all__ = ["box_decode"]


def _check_quad(name, value, positive):
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of 4 numbers (dx, dy, dw, dh), "
                        f"got {type(value).__name__}") from None
    if len(items) != 4:
        raise ValueError(f"{name} must have 4 entries (dx, dy, dw, dh), got {len(items)}")
    out = []
    for i, v in enumerate(items):
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name}[{i}] must be a number, got {type(v).__name__}")
        if not math.isfinite(float(v)) or (positive and not float(v) > 0):
            raise ValueError(f"{name}[{i}] must be {'positive and ' if positive else ''}"
                             f"finite, got {v}")
        out.append(float(v))
    return tuple(out)


def _check_ndarrays(rois, deltas, im_info):
    for name, arr in (("rois", rois), ("deltas", deltas), ("im_info", im_info)):
        if np.dtype(arr.dtype) != np.float32:
            raise TypeError(f"{name} must be float32, got {np.dtype(arr.dtype).name}")
    if rois.ndim != 2 or rois.shape[1] != 5 or rois.shape[0] == 0:
        raise ValueError(f"rois must be (N, 5) [batch_idx, x1, y1, x2, y2] with N >= 1, got "
                         f"{rois.shape}")
    if deltas.shape != (rois.shape[0], 4):
        raise ValueError(f"deltas must be ({rois.shape[0]}, 4) (one class-agnostic (dx, dy, dw, "
                         f"dh) per roi), got {deltas.shape}")
    if im_info.ndim != 2 or im_info.shape[1] != 3 or im_info.shape[0] < 1:
        raise ValueError(f"im_info must be (B, 3) [height, width, scale] with B >= 1, got "
                         f"{im_info.shape}")


def box_decode(rois, deltas, im_info, *, bbox_means=(0., 0., 0., 0.),
               bbox_stds=(0.1, 0.1, 0.2, 0.2), name=None):
    """Refines rois by their class-agnostic deltas: the rois of the next cascade stage.

    Each row is decoded as ``simpledet.core.boxes.decode_boxes`` does (deltas de-normalized as
    ``d * bbox_stds + bbox_means``, "+1" widths, dw/dh clipped at log(1000/16)) and clipped
    (``clip_boxes``) to the image its column 0 names (im_info's height and width of that
    image); column 0 is kept. A row whose batch index is not an integer in [0, B) (the -1
    padding rows "no rois" stands for) is copied unchanged. Float32 arithmetic, the same on CPU
    and GPU. The op's gradient is zero (the next stage's rois are sampling input, not a path
    for gradients).

    Args:
        rois: (N, 5) float32 [batch_idx, x1, y1, x2, y2] in input-image pixels, any order of
            images (each row is read on its own).
        deltas: (N, 4) float32 normalized (dx, dy, dw, dh), one set per roi (a class-agnostic
            box head's regression output).
        im_info: (B, 3) float32 [height, width, scale] of each (resized) input image.
        bbox_means: 4 numbers added after scaling.
        bbox_stds: 4 positive numbers the deltas are multiplied by.
        name: symbol name (Symbol inputs only).

    Returns:
        (N, 5) float32 [batch_idx, x1, y1, x2, y2]: a Symbol when the inputs are Symbols, else an
        NDArray.

    Raises:
        TypeError: inputs of mixed kinds or non-float32 NDArrays, arguments of the wrong type.
        ValueError: arguments out of range or NDArray shapes that do not fit.
    """
    inputs = (rois, deltas, im_info)
    if all(isinstance(x, mx.sym.Symbol) for x in inputs):
        backend = mx.sym.contrib
    elif all(isinstance(x, mx.nd.NDArray) for x in inputs):
        backend = mx.nd.contrib
    else:
        kinds = ", ".join(f"{n}={type(x).__name__}"
                          for n, x in zip(("rois", "deltas", "im_info"), inputs))
        raise TypeError(f"rois, deltas and im_info must all be mx.sym.Symbol or all "
                        f"mx.nd.NDArray, got {kinds}")
    means = _check_quad("bbox_means", bbox_means, positive=False)
    stds = _check_quad("bbox_stds", bbox_stds, positive=True)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}")
    kwargs = dict(bbox_means=str(means), bbox_stds=str(stds))
    if backend is mx.nd.contrib:
        _check_ndarrays(rois, deltas, im_info)
    elif name is not None:
        kwargs["name"] = name
    return backend.BoxDecode(rois, deltas, im_info, **kwargs)
