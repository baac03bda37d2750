"""Box-head outputs to final detections (``_contrib_DetectionPostprocess``)."""
import math
import numbers

import mxnet as mx
import numpy as np

import simpledet  # noqa: F401  (loads the operator library)

__all__ = ["detection_postprocess"]


def _check_number(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value}")
    return float(value)


def _check_quad(name, value):
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of 4 numbers (dx, dy, dw, dh), "
                        f"got {type(value).__name__}") from None
    if len(items) != 4:
        raise ValueError(f"{name} must have 4 entries (dx, dy, dw, dh), got {len(items)}")
    return tuple(_check_number(f"{name}[{i}]", v) for i, v in enumerate(items))


def _check_ndarrays(rois, cls_prob, bbox_pred, im_info, class_agnostic):
    arrays = {"rois": rois, "cls_prob": cls_prob, "bbox_pred": bbox_pred, "im_info": im_info}
    for name, arr in arrays.items():
        if arr.dtype != np.float32:
            raise TypeError(f"{name} must be float32, got {np.dtype(arr.dtype).name}")
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-D, got shape {arr.shape}")
    n = rois.shape[0]
    if rois.shape[1] != 5:
        raise ValueError(f"rois must be (B * R, 5) [batch_idx, x1, y1, x2, y2], got {rois.shape}")
    if im_info.shape[1] != 3 or im_info.shape[0] < 1:
        raise ValueError(f"im_info must be (B, 3) [height, width, scale] with B >= 1, "
                         f"got {im_info.shape}")
    batch = im_info.shape[0]
    if n % batch != 0:
        raise ValueError(f"rois has {n} rows, not a multiple of the batch size {batch} "
                         f"(im_info rows): rois must be B contiguous blocks of R rows")
    if cls_prob.shape[0] != n or cls_prob.shape[1] < 2:
        raise ValueError(f"cls_prob must be ({n}, C) with C >= 2 (background + classes), "
                         f"got {cls_prob.shape}")
    want = 4 if class_agnostic else 4 * cls_prob.shape[1]
    if bbox_pred.shape != (n, want):
        what = "class_agnostic: 4 deltas per roi" if class_agnostic else "4 deltas per class"
        raise ValueError(f"bbox_pred must be ({n}, {want}) ({what}), got {bbox_pred.shape}")


def detection_postprocess(rois, cls_prob, bbox_pred, im_info, *, bbox_means=(0., 0., 0., 0.),
                          bbox_stds=(0.1, 0.1, 0.2, 0.2), score_thresh=0.05, nms_threshold=0.5,
                          max_det=100, class_agnostic=False, name=None):
    """Decodes, thresholds and NMSes box-head outputs into final detections per image.

    For every image b and foreground class c in 1..C-1: each roi of image b whose probability
    for c is > ``score_thresh`` is decoded with its class-c deltas, de-normalized as
    ``d * bbox_stds + bbox_means`` (``simpledet.core.boxes.decode_boxes``: "+1" widths, dw/dh
    clipped at log(1000/16)), and clipped to the image (``clip_boxes`` with im_info's height
    and width). Greedy NMS runs per class (IoU in the "+1" convention, IoU > ``nms_threshold``
    suppresses; equal scores keep the lower roi index first). The classes are merged, sorted by
    descending score (stable: ties keep the lower class, then the lower roi index, first) and the
    first ``max_det`` are written. Scores and thresholds are compared in float32.

    Args:
        rois: (B * R, 5) float32 [batch_idx, x1, y1, x2, y2] in input-image pixels, B
            contiguous blocks of R rows, block b belonging to image b (the batch_idx column is
            not read; B = im_info.shape[0] must divide the row count).
        cls_prob: (B * R, C) float32 softmax probabilities, column 0 = background, C >= 2.
        bbox_pred: (B * R, 4 * C) float32 class-specific normalized deltas (dx, dy, dw, dh),
            columns 4c..4c+3 for class c; (B * R, 4) when ``class_agnostic``.
        im_info: (B, 3) float32 [height, width, scale] of each (resized) input image.
        bbox_means: 4 means used to de-normalize the deltas.
        bbox_stds: 4 standard deviations used to de-normalize the deltas.
        score_thresh: candidates need a probability strictly above this.
        nms_threshold: IoU above which a lower-scored box of the same class is suppressed,
            in [0, 1].
        max_det: detections kept per image (positive int).
        class_agnostic: bbox_pred holds one set of deltas per roi, shared by all classes
            (NMS is still per class).
        name: symbol name (symbolic inputs only).

    Returns:
        dets: (B, max_det, 6) float32 [x1, y1, x2, y2, score, class] per image, class in
        1..C-1, sorted by descending score; rows past the image's detections are all -1. A
        Symbol when the inputs are Symbols, else an NDArray. The op's gradient is zero.

    Raises:
        TypeError: an argument or input has the wrong type or dtype.
        ValueError: an argument is out of range or the input shapes disagree.
    """
    inputs = (rois, cls_prob, bbox_pred, im_info)
    names = ("rois", "cls_prob", "bbox_pred", "im_info")
    if all(isinstance(x, mx.sym.Symbol) for x in inputs):
        backend = mx.sym.contrib
    elif all(isinstance(x, mx.nd.NDArray) for x in inputs):
        backend = mx.nd.contrib
    else:
        kinds = ", ".join(f"{n}={type(x).__name__}" for n, x in zip(names, inputs))
        raise TypeError(f"rois, cls_prob, bbox_pred and im_info must all be mx.sym.Symbol or "
                        f"all mx.nd.NDArray, got {kinds}")
    means = _check_quad("bbox_means", bbox_means)
    stds = _check_quad("bbox_stds", bbox_stds)
    score_thresh = _check_number("score_thresh", score_thresh)
    nms_threshold = _check_number("nms_threshold", nms_threshold)
    if not 0.0 <= nms_threshold <= 1.0:
        raise ValueError(f"nms_threshold must be in [0, 1], got {nms_threshold}")
    if isinstance(max_det, bool) or not isinstance(max_det, numbers.Integral):
        raise TypeError(f"max_det must be an int, got {type(max_det).__name__}")
    if max_det < 1:
        raise ValueError(f"max_det must be positive, got {max_det}")
    if not isinstance(class_agnostic, (bool, np.bool_)):
        raise TypeError(f"class_agnostic must be a bool, got {type(class_agnostic).__name__}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}")
    if backend is mx.nd.contrib:
        _check_ndarrays(rois, cls_prob, bbox_pred, im_info, bool(class_agnostic))
    kwargs = dict(bbox_means=str(means), bbox_stds=str(stds), score_thresh=repr(score_thresh),
                  nms_threshold=repr(nms_threshold), max_det=str(int(max_det)),
                  class_agnostic=str(bool(class_agnostic)))
    if backend is mx.sym.contrib and name is not None:
        kwargs["name"] = name
    return backend.DetectionPostprocess(rois, cls_prob, bbox_pred, im_info, **kwargs)
