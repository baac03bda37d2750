"""RetinaNet head outputs to final detections (``_contrib_RetinaPostprocess``)."""
import math
import numbers

import mxnet as mx
import numpy as np

import simpledet  # noqa: F401  (loads the operator library)

__all__ = ["retina_postprocess", "RETINA_SCALES"]

_MAX_LEVELS = 8
# RetinaNet's anchors: 3 scales per octave on a base of 4 strides, 3 ratios (A = 9).
RETINA_SCALES = (4.0, 4.0 * 2 ** (1 / 3), 4.0 * 2 ** (2 / 3))


def _tuple_attr(values):
    """'(a, b, ...)' with repr()'d floats, so the C++ side parses the exact same doubles."""
    return "(" + ", ".join(repr(float(v)) for v in values) + ")"


def _numbers(name, values, count=None, positive=False, ascending=False):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__"):
        raise TypeError(f"{name} must be a list or tuple of numbers, got {values!r}")
    values = list(values)
    if not values:
        raise ValueError(f"{name} must not be empty")
    if count is not None and len(values) != count:
        raise ValueError(f"{name} must have {count} entries (dx, dy, dw, dh), got {len(values)}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise TypeError(f"{name} must hold numbers, got {v!r}")
        if not math.isfinite(float(v)) or (positive and not v > 0):
            raise ValueError(f"{name} must hold {'positive ' if positive else ''}finite numbers, "
                             f"got {values}")
    if ascending and any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be strictly ascending, got {values}")
    return values


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if not 0 < value < 2 ** 31:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return int(value)


def _check_ndarrays(cls_probs, bbox_deltas, im_info, num_anchors):
    arrays = [(f"cls_probs[{i}]", a) for i, a in enumerate(cls_probs)]
    arrays += [(f"bbox_deltas[{i}]", a) for i, a in enumerate(bbox_deltas)]
    arrays.append(("im_info", im_info))
    for name, arr in arrays:
        if arr.dtype != np.float32:
            raise TypeError(f"{name} must be float32, got {np.dtype(arr.dtype).name}")
    first = cls_probs[0].shape
    if len(first) != 4 or first[1] % num_anchors != 0:
        raise ValueError(f"cls_probs[0] must be (B, A * C, H, W) with A = len(ratios) * "
                         f"len(scales) = {num_anchors}, got {first}")
    for i, (cls, box) in enumerate(zip(cls_probs, bbox_deltas)):
        if cls.ndim != 4 or cls.shape[:2] != first[:2]:
            raise ValueError(f"cls_probs[{i}] must be (B, A * C, H, W) = ({first[0]}, "
                             f"{first[1]}, H, W) like cls_probs[0], got {cls.shape}")
        want = (first[0], 4 * num_anchors, cls.shape[2], cls.shape[3])
        if box.shape != want:
            raise ValueError(f"bbox_deltas[{i}] must be (B, 4A, H, W) = {want} to match "
                             f"cls_probs[{i}], got {box.shape}")
    if im_info.shape != (first[0], 3):
        raise ValueError(f"im_info must be (B, 3) = ({first[0]}, 3) [height, width, scale], "
                         f"got {im_info.shape}")


def retina_postprocess(cls_probs, bbox_deltas, im_info, *, feature_strides=(8, 16, 32, 64, 128),
                       scales=RETINA_SCALES, ratios=(0.5, 1, 2), bbox_means=(0., 0., 0., 0.),
                       bbox_stds=(1., 1., 1., 1.), score_thresh=0.05, pre_nms_top_n=1000,
                       nms_threshold=0.5, max_det=100, name=None):
    """Decodes, thresholds and NMSes RetinaNet head outputs of all levels into detections.

    Anchors are ``simpledet.core.anchors.grid_anchors(stride_l, scales, ratios, H_l, W_l)``
    (the RPN's anchors: order (y, x, a), anchor a = ratio a // len(scales), scale
    a % len(scales)). Per image and level l: every (anchor, class) with probability >
    ``score_thresh`` is a candidate; the ``pre_nms_top_n`` best are kept (ties: lower candidate
    number o = (a * C + c) * H_l * W_l + y * W_l + x first, i.e. the element order of
    cls_prob), decoded with their anchor's deltas de-normalized as ``d * bbox_stds +
    bbox_means`` ("+1" box decode, dw/dh clipped at log(1000/16), exp in double rounded to
    float32, as ``pyramid_proposal``) and clipped to the image (im_info height/width). Then per
    image, over all levels together: candidates are stably sorted by score (level 0 first on
    ties), greedy NMS runs per class (IoU in the "+1" convention > ``nms_threshold``
    suppresses a lower-ranked box of the same class) and the first ``max_det`` survivors are
    output. Scores and thresholds are compared in float32. There is no min-size filter.

    The output layout is ``detection_postprocess``'s, so the same tester consumes both.
    The operator has no gradient: its backward writes zeros.

    Args:
        cls_probs: list of L Symbols or float32 NDArrays, level l (B, A * C, H_l, W_l):
            sigmoid probabilities; channel a * C + c is foreground class c + 1 of anchor a
            (anchor-major, as the RPN's bbox layout). C is cls_probs[0].shape[1] / A.
        bbox_deltas: list of L, level l (B, 4A, H_l, W_l); channel a * 4 + k is delta k
            (dx, dy, dw, dh) of anchor a, class-agnostic.
        im_info: (B, 3) [height, width, scale] of each (resized) input image.
        feature_strides: L strictly ascending strides (RetinaNet P3-P7: (8, 16, 32, 64, 128)).
        scales: anchor sizes in units of the stride (RetinaNet: 4 * 2 ** (0, 1/3, 2/3)).
        ratios: anchor aspect ratios (height / width).
        bbox_means, bbox_stds: 4 numbers each, de-normalizing the deltas.
        score_thresh: candidates need a probability strictly above this.
        pre_nms_top_n: candidates kept per level and image before NMS.
        nms_threshold: IoU threshold of the class-aware NMS, in [0, 1].
        max_det: detections kept per image.
        name: symbol name (symbolic inputs only).

    Returns:
        dets: (B, max_det, 6) float32 [x1, y1, x2, y2, score, class] per image, class in 1..C,
        sorted by descending score; rows past the image's detections are all -1. A Symbol
        when the inputs are Symbols, else an NDArray.

    Raises:
        TypeError: inputs of mixed or unsupported types, non-float32 NDArrays, bad arg types.
        ValueError: list lengths disagreeing with feature_strides, bad shapes or arguments.
    """
    for arg_name, seq in (("cls_probs", cls_probs), ("bbox_deltas", bbox_deltas)):
        if not isinstance(seq, (list, tuple)):
            raise TypeError(f"{arg_name} must be a list or tuple (one entry per level), "
                            f"got {type(seq).__name__}")
    strides = _numbers("feature_strides", feature_strides, positive=True, ascending=True)
    if len(strides) > _MAX_LEVELS:
        raise ValueError(f"feature_strides may list at most {_MAX_LEVELS} levels, "
                         f"got {len(strides)}")
    if len(cls_probs) != len(strides) or len(bbox_deltas) != len(strides):
        raise ValueError(f"need one cls_prob and one bbox_delta per level: "
                         f"len(feature_strides) = {len(strides)}, but len(cls_probs) = "
                         f"{len(cls_probs)} and len(bbox_deltas) = {len(bbox_deltas)}")
    scales = _numbers("scales", scales, positive=True)
    ratios = _numbers("ratios", ratios, positive=True)
    means = _numbers("bbox_means", bbox_means, count=4)
    stds = _numbers("bbox_stds", bbox_stds, count=4)
    pre_nms_top_n = _positive_int("pre_nms_top_n", pre_nms_top_n)
    max_det = _positive_int("max_det", max_det)
    for arg_name, value in (("score_thresh", score_thresh), ("nms_threshold", nms_threshold)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"{arg_name} must be a number, got {value!r}")
        if not math.isfinite(float(value)):
            raise ValueError(f"{arg_name} must be finite, got {value}")
    if not 0 <= nms_threshold <= 1:
        raise ValueError(f"nms_threshold must be in [0, 1], got {nms_threshold}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}")

    inputs = list(cls_probs) + list(bbox_deltas) + [im_info]
    attrs = dict(feature_strides=_tuple_attr(strides), scales=_tuple_attr(scales),
                 ratios=_tuple_attr(ratios), bbox_means=_tuple_attr(means),
                 bbox_stds=_tuple_attr(stds), score_thresh=repr(float(score_thresh)),
                 pre_nms_top_n=str(pre_nms_top_n), nms_threshold=repr(float(nms_threshold)),
                 max_det=str(max_det))
    if all(isinstance(x, mx.sym.Symbol) for x in inputs):
        return mx.sym.contrib.RetinaPostprocess(*inputs, name=name, **attrs)
    if all(isinstance(x, mx.nd.NDArray) for x in inputs):
        if name is not None:
            raise ValueError("name applies to symbolic inputs only")
        _check_ndarrays(cls_probs, bbox_deltas, im_info, len(scales) * len(ratios))
        return mx.nd.contrib.RetinaPostprocess(*inputs, **attrs)
    kinds = sorted({type(x).__name__ for x in inputs})
    raise TypeError(f"cls_probs, bbox_deltas and im_info must be all mx.sym.Symbol or all "
                    f"mx.nd.NDArray, got {kinds}")
