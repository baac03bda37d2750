"""Mask R-CNN mask targets: each foreground roi's gt polygons rasterised on an M x M grid
(op ``_contrib_MaskTarget``)."""
import numbers

import mxnet as mx
import numpy as np

import simpledet  # noqa: F401  (loads the operator library)

__all__ = ["mask_target"]

MAX_MASK_SIZE = 1024


def _check_ndarray_inputs(rois, gt_index, gt_polys):
    for name, arr in (("rois", rois), ("gt_index", gt_index), ("gt_polys", gt_polys)):
        if np.dtype(arr.dtype) != np.float32:
            raise TypeError(f"{name} must be float32, got {np.dtype(arr.dtype).name}")
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"rois must be (N, 5) [batch_idx, x1, y1, x2, y2], got {rois.shape}")
    if gt_index.shape != (rois.shape[0],):
        raise ValueError(f"gt_index must be (N,) with N = {rois.shape[0]} (one entry per roi), "
                         f"got {gt_index.shape}")
    if gt_polys.ndim != 3:
        raise ValueError(f"gt_polys must be (B, G, L) padded polygon rows, got {gt_polys.shape}")
    if 0 in rois.shape or 0 in gt_polys.shape:
        raise ValueError(f"rois {rois.shape} and gt_polys {gt_polys.shape} must be non-empty: "
                         f"MXNet 1.x extension ops cannot take zero-size inputs (keep the N roi "
                         f"rows with gt_index -1 when there is no foreground, and pad gt_polys "
                         f"with rows of -1)")


def mask_target(rois, gt_index, gt_polys, *, mask_size=28, name=None):
    """Rasterises each roi's matched gt polygons into an M x M mask target.

    Pixel (i, j) of roi r's target is 1 when the RoI-frame point (j + 0.5, i + 0.5), i.e. the
    image point ``(x1 + (j + 0.5) * w / M, y1 + (i + 0.5) * h / M)`` with ``w = max(x2 - x1 + 1,
    1)`` (h alike, the "+1" box convention), lies inside the union of the gt's polygons, each
    polygon by the even-odd rule; else 0. Polygons are continuous image coordinates (pixel px
    covers [px, px + 1)), so for large M the target approaches pycocotools' rasterisation of the
    polygons shifted by (-x1, -y1) and scaled by (M / w, M / h). Rows with ``gt_index < 0``, or
    whose gt row has P <= 0 (no polygon, e.g. a crowd or RLE-only gt), are all -1: the loss
    ignores them. The CPU and CUDA paths give identical targets. No gradient flows.

    MXNet 1.x extension ops cannot take zero-size inputs: with no foreground roi at all keep the
    N rows and set every gt_index to -1 (the targets are then all -1); images without gt keep
    G >= 1 padding rows of -1.

    Args:
        rois: (N, 5) float32 [b, x1, y1, x2, y2] in input-image pixels; column 0 is the image
            index (read as an int), e.g. the sampled rois of ``proposal_target`` (N = B * S).
        gt_index: (N,) float32, the row of ``gt_polys[b]`` each roi is matched to (an integer in
            [0, G)), or < 0 for no target (background and ignored rois).
        gt_polys: (B, G, L) float32 padded polygon rows, one per gt (see
            ``simpledet.core.masks.encode_polygons``): ``[P, n_1, x, y, ... (n_1 points), n_2,
            x, y, ..., n_P, ...]`` then -1 up to L; padding rows are all -1.
        mask_size: M, the side of the target grid, in [1, 1024].
        name: symbol name (Symbol inputs only).

    Returns:
        mask_targets (N, M, M) float32 in {0, 1}, or all -1 for rows without a target; a Symbol
        or an NDArray like the inputs.

    Raises:
        TypeError: inputs not all Symbols or all NDArrays, non-float32 NDArrays, or a
            non-int mask_size.
        ValueError: mask_size out of range, or NDArray shapes that do not fit. A gt_index that
            is not a row of gt_polys, a batch index outside [0, B), or a malformed gt row
            (n_k < 3, a polygon running past L) raise MXNetError when the op runs.
    """
    if isinstance(mask_size, bool) or not isinstance(mask_size, numbers.Integral):
        raise TypeError(f"mask_size must be an int, got {type(mask_size).__name__} "
                        f"{mask_size!r}")
    if not 1 <= mask_size <= MAX_MASK_SIZE:
        raise ValueError(f"mask_size must be in [1, {MAX_MASK_SIZE}], got {mask_size}")
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {name!r}")
    inputs = (rois, gt_index, gt_polys)
    attrs = {"mask_size": str(int(mask_size))}
    if all(isinstance(x, mx.sym.Symbol) for x in inputs):
        return mx.sym.contrib.MaskTarget(*inputs, name=name, **attrs)
    if all(isinstance(x, mx.nd.NDArray) for x in inputs):
        _check_ndarray_inputs(*inputs)
        return mx.nd.contrib.MaskTarget(*inputs, **attrs)
    raise TypeError(f"rois, gt_index and gt_polys must all be mx.sym.Symbol or all mx.nd.NDArray, "
                    f"got {', '.join(type(x).__name__ for x in inputs)}")
