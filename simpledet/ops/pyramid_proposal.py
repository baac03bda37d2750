"""RPN proposals over a feature pyramid (``mx.sym.contrib.PyramidProposal``)."""
import numbers

import mxnet as mx
import numpy as np

import simpledet  # noqa: F401  (loads the operator library)

__all__ = ["pyramid_proposal"]

_MAX_LEVELS = 8


def _tuple_attr(values):
    """'(a, b, ...)' with repr()'d floats, so the C++ side parses the exact same doubles."""
    return "(" + ", ".join(repr(float(v)) for v in values) + ")"


def _positive_numbers(name, values, ascending=False):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"{name} must be a list or tuple of numbers, got {values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} must not be empty")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name} must hold numbers, got {v!r}")
        if not v > 0:
            raise ValueError(f"{name} must hold positive numbers, got {values}")
    if ascending and any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be strictly ascending, got {values}")
    return values


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not 0 < value < 2 ** 31:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def _check_ndarrays(cls_probs, bbox_preds, im_info, num_anchors):
    arrays = [(f"cls_probs[{i}]", a) for i, a in enumerate(cls_probs)]
    arrays += [(f"bbox_preds[{i}]", a) for i, a in enumerate(bbox_preds)]
    arrays.append(("im_info", im_info))
    for name, arr in arrays:
        if arr.dtype != np.float32:
            raise TypeError(f"{name} must be float32, got {np.dtype(arr.dtype).name} (cast RPN "
                            f"outputs and im_info to float32 before pyramid_proposal)")
    batch = cls_probs[0].shape[0] if cls_probs[0].ndim == 4 else None
    for i, (cls, box) in enumerate(zip(cls_probs, bbox_preds)):
        if cls.ndim != 4 or cls.shape[0] != batch or cls.shape[1] != num_anchors:
            raise ValueError(f"cls_probs[{i}] must be (B, A, H, W) with A = len(ratios) * "
                             f"len(scales) = {num_anchors} and the batch size of cls_probs[0], "
                             f"got {cls.shape}")
        want = (batch, 4 * num_anchors, cls.shape[2], cls.shape[3])
        if box.shape != want:
            raise ValueError(f"bbox_preds[{i}] must be (B, 4A, H, W) = {want} to match "
                             f"cls_probs[{i}], got {box.shape}")
    if im_info.shape != (batch, 3):
        raise ValueError(f"im_info must be (B, 3) = ({batch}, 3) [height, width, scale], "
                         f"got {im_info.shape}")


def pyramid_proposal(cls_probs, bbox_preds, im_info, *, feature_strides, scales=(8,),
                     ratios=(0.5, 1, 2), pre_nms_top_n=2000, post_nms_top_n=1000,
                     nms_threshold=0.7, min_size=0, name=None):
    """Region proposals from RPN outputs on one or more feature levels (C4 or FPN P2-P6).

    Per image and per level l: the anchors ``simpledet.core.anchors.grid_anchors(stride_l,
    scales, ratios, H_l, W_l)`` (order (y, x, a); anchor a is ratio a // len(scales), scale
    a % len(scales)) are decoded with the "+1"-convention box decode (dw/dh clipped at
    log(1000/16); exp is evaluated in double and rounded to float32), clipped to the image
    (``im_info`` height/width), boxes whose width or height (x2 - x1 + 1) is below
    ``min_size * im_info[b, 2]`` are dropped (as are NaN scores), and the ``pre_nms_top_n``
    highest-scoring survivors of the level are kept (ties: lower anchor index first).

    The survivors of all levels are then merged (level 0 first), stably sorted by descending
    score and go through ONE greedy NMS (a box is suppressed when its IoU with a kept,
    higher-ranked box is > ``nms_threshold``), keeping the first ``post_nms_top_n``. This joint
    NMS across levels is SimpleDet's (and MXNet MultiProposal's) behaviour; detectron2 instead
    runs NMS per level and then takes the top ``post_nms_top_n`` of the union.

    Padding: when an image keeps K < ``post_nms_top_n`` boxes, output row j >= K repeats kept
    box j % K (as ``contrib.MultiProposal`` does); when K == 0 its rows are [b, 0, 0, 0, 0] with
    score 0. With one level, distinct scores, ``min_size=0`` and an ``im_info`` covering the
    whole feature map, the result equals ``contrib.MultiProposal`` (given cls_prob
    ``concat(1 - fg, fg)``) up to float rounding in the decode.

    The operator has no gradient: its backward writes zeros to every input gradient.

    Args:
        cls_probs: list of L Symbols or float32 NDArrays, level l of shape (B, A, H_l, W_l):
            foreground probability of anchor a at (y, x). A = len(ratios) * len(scales).
        bbox_preds: list of L Symbols or NDArrays, level l of shape (B, 4A, H_l, W_l);
            channel a * 4 + k holds delta k (dx, dy, dw, dh; not normalized) of anchor a.
        im_info: Symbol or NDArray (B, 3): [height, width, scale] of each (resized) image.
        feature_strides: L strides in pixels, strictly ascending (e.g. (4, 8, 16, 32, 64)
            for FPN P2-P6, (16,) for C4).
        scales: anchor sizes in units of the stride.
        ratios: anchor aspect ratios (height / width).
        pre_nms_top_n: boxes kept per level and image before NMS.
        post_nms_top_n: boxes output per image.
        nms_threshold: IoU threshold of the NMS, in [0, 1].
        min_size: minimum box side in original-image pixels (multiplied by im_info[b, 2]).
        name: Symbol name (symbolic inputs only).

    Returns:
        (rois, scores): rois (B * post_nms_top_n, 5) float32 [batch_idx, x1, y1, x2, y2] in
        input-image pixels, image b in rows b * post_nms_top_n ... (b + 1) * post_nms_top_n - 1,
        sorted by descending score before the padding; scores (B * post_nms_top_n, 1) float32.
        Symbols or NDArrays, following the inputs.

    Raises:
        TypeError: inputs of mixed or unsupported types, non-float32 NDArrays, bad arg types.
        ValueError: list lengths disagreeing with feature_strides, bad shapes or arguments.
    """
    for arg_name, seq in (("cls_probs", cls_probs), ("bbox_preds", bbox_preds)):
        if not isinstance(seq, (list, tuple)):
            raise TypeError(f"{arg_name} must be a list or tuple (one entry per level), "
                            f"got {type(seq).__name__}")
    strides = _positive_numbers("feature_strides", feature_strides, ascending=True)
    if len(strides) > _MAX_LEVELS:
        raise ValueError(f"feature_strides may list at most {_MAX_LEVELS} levels, "
                         f"got {len(strides)}")
    if len(cls_probs) != len(strides) or len(bbox_preds) != len(strides):
        raise ValueError(f"need one cls_prob and one bbox_pred per level: "
                         f"len(feature_strides) = {len(strides)}, but len(cls_probs) = "
                         f"{len(cls_probs)} and len(bbox_preds) = {len(bbox_preds)}")
    scales = _positive_numbers("scales", scales)
    ratios = _positive_numbers("ratios", ratios)
    pre_nms_top_n = _positive_int("pre_nms_top_n", pre_nms_top_n)
    post_nms_top_n = _positive_int("post_nms_top_n", post_nms_top_n)
    for arg_name, value in (("nms_threshold", nms_threshold), ("min_size", min_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{arg_name} must be a number, got {value!r}")
    if not 0 <= nms_threshold <= 1:
        raise ValueError(f"nms_threshold must be in [0, 1], got {nms_threshold}")
    if not min_size >= 0:
        raise ValueError(f"min_size must be >= 0, got {min_size}")

    inputs = list(cls_probs) + list(bbox_preds) + [im_info]
    attrs = dict(feature_strides=_tuple_attr(strides), scales=_tuple_attr(scales),
                 ratios=_tuple_attr(ratios), pre_nms_top_n=str(pre_nms_top_n),
                 post_nms_top_n=str(post_nms_top_n), nms_threshold=repr(float(nms_threshold)),
                 min_size=repr(float(min_size)))
    if all(isinstance(x, mx.sym.Symbol) for x in inputs):
        out = mx.sym.contrib.PyramidProposal(*inputs, name=name, **attrs)
        return out[0], out[1]
    if all(isinstance(x, mx.nd.NDArray) for x in inputs):
        if name is not None:
            raise ValueError("name applies to symbolic inputs only")
        _check_ndarrays(cls_probs, bbox_preds, im_info, len(scales) * len(ratios))
        rois, scores = mx.nd.contrib.PyramidProposal(*inputs, **attrs)
        return rois, scores
    kinds = sorted({type(x).__name__ for x in inputs})
    raise TypeError(f"cls_probs, bbox_preds and im_info must be all mx.sym.Symbol or all "
                    f"mx.nd.NDArray, got {kinds}")
