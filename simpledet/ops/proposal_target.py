"""Proposal target sampling for the R-CNN box heads (op ``_contrib_ProposalTarget``)."""
import numbers

import mxnet as mx
import numpy as np

import simpledet  # noqa: F401  (loads the operator library)

__all__ = ["proposal_target"]


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def _check_fraction(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1], got {type(value).__name__} "
                        f"{value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value}")
    return float(value)


def _check_four(name, values, positive):
    try:
        values = tuple(values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of 4 numbers (dx, dy, dw, dh), got "
                        f"{values!r}") from None
    if len(values) != 4 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool)
                                   for v in values):
        raise ValueError(f"{name} must be 4 numbers (dx, dy, dw, dh), got {values!r}")
    values = tuple(float(v) for v in values)
    if positive and not all(v > 0 for v in values):
        raise ValueError(f"{name} must be positive, got {values!r}")
    return values


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def _check_ndarray_inputs(rois, gt_boxes, crowd_boxes):
    arrays = (("rois", rois), ("gt_boxes", gt_boxes), ("crowd_boxes", crowd_boxes))
    for name, arr in arrays:
        if arr is not None and np.dtype(arr.dtype) != np.float32:
            raise TypeError(f"{name} must be float32, got {np.dtype(arr.dtype).name}")
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"rois must be (B*R, 5) [batch_idx, x1, y1, x2, y2], got {rois.shape}")
    if gt_boxes.ndim != 3 or gt_boxes.shape[2] != 5 or gt_boxes.shape[0] < 1:
        raise ValueError(f"gt_boxes must be (B, G, 5) [x1, y1, x2, y2, class] with B >= 1, got "
                         f"{gt_boxes.shape}")
    if rois.shape[0] == 0 or gt_boxes.shape[1] == 0:
        raise ValueError(f"rois {rois.shape} and gt_boxes {gt_boxes.shape} must be non-empty: "
                         f"MXNet 1.x extension ops cannot take zero-size inputs (pad gt_boxes "
                         f"with rows of class -1 for images without boxes)")
    if rois.shape[0] % gt_boxes.shape[0]:
        raise ValueError(f"rois has {rois.shape[0]} rows, not a multiple of the batch size "
                         f"{gt_boxes.shape[0]} (gt_boxes.shape[0]): rois must be B blocks of R "
                         f"rows")
    if crowd_boxes is None:
        return
    if crowd_boxes.ndim != 3 or crowd_boxes.shape[2] != 4 or (
            crowd_boxes.shape[0] != gt_boxes.shape[0]):
        raise ValueError(f"crowd_boxes must be (B, M, 4) [x1, y1, x2, y2] with B = "
                         f"{gt_boxes.shape[0]} (gt_boxes.shape[0]), got {crowd_boxes.shape}")
    if crowd_boxes.shape[1] == 0:
        raise ValueError(f"crowd_boxes {crowd_boxes.shape} must be non-empty: MXNet 1.x "
                         f"extension ops cannot take zero-size inputs (pad with rows of -1 for "
                         f"images without crowd regions)")


def proposal_target(rois, gt_boxes, *, num_classes, image_rois=512, fg_fraction=0.25,
                    fg_thresh=0.5, bg_thresh_hi=0.5, bg_thresh_lo=0.0,
                    bbox_means=(0., 0., 0., 0.), bbox_stds=(0.1, 0.1, 0.2, 0.2),
                    class_agnostic=False, add_gt=True, sample=True, output_gt_index=False,
                    crowd_boxes=None, crowd_thresh=0.7, name=None):
    """Samples the rois the box head trains on and builds their class and box targets.

    For each image b the candidates are its R rois followed, when ``add_gt``, by its G gt rows
    (in row order). Each candidate's max IoU with the image's valid gt boxes (rows with
    class > 0; "+1" pixel convention, as ``simpledet.core.boxes.box_iou``) and the gt reaching
    it (first on ties) classify it: foreground when max_iou >= fg_thresh, background when it is
    not foreground and bg_thresh_lo <= max_iou < bg_thresh_hi, otherwise ignored; in an image
    without valid gt every candidate is background.

    With ``crowd_boxes`` (the image's crowd, iscrowd, regions: Detectron's crowd rule) a
    candidate that would be background is ignored instead (never a background row) when some
    valid crowd region of its image covers more than ``crowd_thresh`` of the candidate's own area
    (intersection over the candidate's area, "+1" areas, evaluated as
    inter > crowd_thresh * area as the RPN's crowd rule, simpledet.data.anchor_target.in_crowd);
    foreground candidates stay foreground. Without it (the default) the op is unchanged.

    With ``sample`` (S = image_rois rows per image) padding gt rows are no candidates;
    ``min(round(fg_fraction * image_rois), #fg)`` foreground candidates are sampled without
    replacement (``round`` is half-to-even, as NumPy's), the remaining rows take background
    candidates, without replacement when there are enough, otherwise all of them plus uniform
    repeats; with no background candidate at all the remaining rows are ignored (label -1, zero
    weights, roi = the image's first candidate). Each image's rows are the foreground block then
    the background block, each in ascending candidate order, then the ignored rows; so when
    nothing is subsampled the output is deterministic. Sampling draws from MXNet's random
    states: ``mx.random.seed`` reproduces it.

    Without ``sample`` (Cascade R-CNN's later stages relabel all boxes of the previous stage)
    every candidate is a row, in candidate order: S = R + G with ``add_gt``, else R, and
    image_rois / fg_fraction are unused. Foreground rows get their gt's class and targets,
    background rows label 0, ignored candidates label -1 with zero weights; a padding gt row
    (with ``add_gt``) is a label -1 row holding its own (padding) box with zero weights. Nothing
    is drawn.

    Args:
        rois: (B*R, 5) float32 [batch_idx, x1, y1, x2, y2], B contiguous blocks of R rows
            (block b belongs to image b; column 0 is not read), e.g. the pyramid proposal output.
        gt_boxes: (B, G, 5) float32 [x1, y1, x2, y2, class]; class in 1..num_classes-1 for real
            boxes, rows with class <= 0 are padding. B fixes the batch size; B*R must divide.
        num_classes: number of classes including background (class 0), >= 2.
        image_rois: sampled rows per image (S), >= 1.
        fg_fraction: fraction of the S rows reserved for foreground, in [0, 1].
        fg_thresh: minimum max-IoU of a foreground candidate, in [0, 1].
        bg_thresh_hi: background max-IoU upper bound (exclusive), in [0, 1].
        bg_thresh_lo: background max-IoU lower bound (inclusive), in [0, bg_thresh_hi].
        bbox_means: 4 numbers; targets are normalized as (t - means) / stds.
        bbox_stds: 4 positive numbers.
        class_agnostic: one 4-column target per row instead of one per class.
        add_gt: the image's gt boxes are candidates after its rois (SimpleDet's
            ``proposal_wo_gt = False``); False: only its R rois are.
        sample: subsample image_rois rows per image; False: keep every candidate, in order.
        output_gt_index: also return gt_index (for Mask R-CNN's mask targets).
        crowd_boxes: None, or (B, M, 4) float32 [x1, y1, x2, y2] crowd regions per image in
            input pixels (simpledet.data.targets.CrowdRegionAssigner's ``gt_crowd``), M >= 1;
            rows that are no box reaching into the image (x2 < x1, y2 < y1, x2 < 0 or y2 < 0,
            e.g. rows of -1) are padding. A Symbol or an NDArray like rois; the op's third input
            (attribute ``has_crowd``).
        crowd_thresh: in [0, 1]; a would-be background candidate whose IoF with a crowd region
            is > crowd_thresh is ignored (Detectron: 0.7). Used only with crowd_boxes.
        name: symbol name (Symbol inputs only).

    Returns:
        Tuple ``(rois, labels, bbox_targets, bbox_weights)``, plus ``gt_index`` last with
        ``output_gt_index``; Symbols or NDArrays like the inputs, all float32, S rows per image
        (image_rois with ``sample``, else R + G or R), image b's rows at [b*S, (b+1)*S):

        - rois: (B*S, 5) [b, x1, y1, x2, y2] sampled boxes.
        - labels: (B*S,) gt class for foreground rows, 0 for background, -1 for ignored rows.
        - bbox_targets: (B*S, 4*num_classes) (or (B*S, 4) when class_agnostic): a foreground
          row of class c holds in columns 4c..4c+3 (0..3 when class agnostic) the normalized
          regression target (dx, dy, dw, dh) from its roi to its matched gt
          (``simpledet.core.boxes.encode_boxes``); zeros elsewhere.
        - bbox_weights: same shape, 1 where a target is set, else 0.
        - gt_index: (B*S,) for a foreground row the row index j (0..G-1, padding rows counted)
          in gt_boxes[b] of its matched gt, whose class is its label; -1 on every other row.

    Raises:
        TypeError: inputs not all Symbols or all NDArrays, non-float32 NDArrays, or
            arguments of the wrong type.
        ValueError: arguments out of range or NDArray shapes that do not fit.
    """
    num_classes = _check_int("num_classes", num_classes, 2)
    image_rois = _check_int("image_rois", image_rois, 1)
    fg_fraction = _check_fraction("fg_fraction", fg_fraction)
    fg_thresh = _check_fraction("fg_thresh", fg_thresh)
    bg_thresh_hi = _check_fraction("bg_thresh_hi", bg_thresh_hi)
    bg_thresh_lo = _check_fraction("bg_thresh_lo", bg_thresh_lo)
    if bg_thresh_lo > bg_thresh_hi:
        raise ValueError(f"bg_thresh_lo ({bg_thresh_lo}) must be <= bg_thresh_hi "
                         f"({bg_thresh_hi})")
    bbox_means = _check_four("bbox_means", bbox_means, positive=False)
    bbox_stds = _check_four("bbox_stds", bbox_stds, positive=True)
    class_agnostic = _check_bool("class_agnostic", class_agnostic)
    add_gt = _check_bool("add_gt", add_gt)
    sample = _check_bool("sample", sample)
    output_gt_index = _check_bool("output_gt_index", output_gt_index)
    crowd_thresh = _check_fraction("crowd_thresh", crowd_thresh)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {name!r}")

    attrs = {
        "num_classes": str(num_classes),
        "image_rois": str(image_rois),
        "fg_fraction": repr(fg_fraction),
        "fg_thresh": repr(fg_thresh),
        "bg_thresh_hi": repr(bg_thresh_hi),
        "bg_thresh_lo": repr(bg_thresh_lo),
        "bbox_means": str(bbox_means),
        "bbox_stds": str(bbox_stds),
        "class_agnostic": str(class_agnostic),
        "add_gt": str(add_gt),
        "sample": str(sample),
        "output_gt_index": str(output_gt_index),
    }
    inputs = [rois, gt_boxes]
    if crowd_boxes is not None:
        attrs.update(has_crowd="True", crowd_thresh=repr(crowd_thresh))
        inputs.append(crowd_boxes)
    if all(isinstance(x, mx.sym.Symbol) for x in inputs):
        out = mx.sym.contrib.ProposalTarget(*inputs, name=name, **attrs)
        return tuple(out[i] for i in range(5 if output_gt_index else 4))
    if all(isinstance(x, mx.nd.NDArray) for x in inputs):
        _check_ndarray_inputs(rois, gt_boxes, crowd_boxes)
        return tuple(mx.nd.contrib.ProposalTarget(*inputs, **attrs))
    names = " and ".join(("rois", "gt_boxes", "crowd_boxes")[:len(inputs)])
    each = "both" if len(inputs) == 2 else "all"
    raise TypeError(f"{names} must {each} be mx.sym.Symbol or {each} mx.nd.NDArray, got "
                    f"{' and '.join(type(x).__name__ for x in inputs)}")
