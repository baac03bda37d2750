"""FPN ROIAlign: pools each roi from the pyramid level its size selects (C++ op FPNROIAlign)."""
import math

import mxnet as mx

import simpledet  # noqa: F401  (loads the operator library)


def _is_power_of_two(value):
    return value > 0 and math.isclose(math.log2(value), round(math.log2(value)))


def fpn_roi_align(rois, feature_maps, *, feature_strides, pooled_size=(7, 7), sampling_ratio=2,
                  aligned=False, canonical_scale=224.0, canonical_level=4, name=None):
    """Bilinear ROIAlign over FPN levels (or a single map).

    Each roi goes to level ``floor(canonical_level + log2(sqrt(w * h) / canonical_scale))``
    (w = x2 - x1 + 1), clamped to the levels given; sampling then follows
    ``mx.sym.contrib.ROIAlign`` exactly (so with one map the two are equal).

    Args:
        rois: (N, 5) [batch_idx, x1, y1, x2, y2] in input-image pixels; rows with batch_idx < 0
            (padding) pool to zeros.
        feature_maps: list of L maps, each (B, C, H_l, W_l), finest first (P2..P5, or [C4]).
        feature_strides: L ascending powers of two, the stride of each map (e.g. (4, 8, 16, 32)).
        pooled_size: (out_h, out_w) or an int.
        sampling_ratio: samples per bin side; <= 0 for adaptive ceil(roi_size / pooled_size).
        aligned: half-pixel offset (detectron2's ``aligned=True``); False is SimpleDet's legacy.
        canonical_scale, canonical_level: a roi of side canonical_scale maps to canonical_level.
        name: symbol name.

    Returns:
        (N, C, out_h, out_w), the dtype of the inputs (float32, or float64 for gradient checks).
        Backward scatters into the feature maps; rois get zero gradient.
    """
    if isinstance(feature_maps, (mx.sym.Symbol, mx.nd.NDArray)):
        feature_maps = [feature_maps]
    feature_maps = list(feature_maps)
    strides = tuple(feature_strides)
    if len(strides) != len(feature_maps) or not 1 <= len(strides) <= 8:
        raise ValueError(f"fpn_roi_align: feature_strides {strides} must give one stride per "
                         f"feature map ({len(feature_maps)} maps, at most 8)")
    if not all(_is_power_of_two(s) for s in strides) or list(strides) != sorted(set(strides)):
        raise ValueError(f"fpn_roi_align: feature_strides must be ascending powers of two, "
                         f"got {strides}")
    if isinstance(pooled_size, int):
        pooled_size = (pooled_size, pooled_size)
    if len(pooled_size) != 2 or min(pooled_size) < 1:
        raise ValueError(f"fpn_roi_align: pooled_size must be (h, w) >= 1, got {pooled_size}")
    if canonical_scale <= 0:
        raise ValueError(f"fpn_roi_align: canonical_scale must be > 0, got {canonical_scale}")
    attrs = dict(feature_strides=str(strides), pooled_size=str(tuple(int(p) for p in pooled_size)),
                 sampling_ratio=str(int(sampling_ratio)), aligned=str(bool(aligned)),
                 canonical_scale=str(float(canonical_scale)),
                 canonical_level=str(int(canonical_level)))
    inputs = [rois, *feature_maps]
    if all(isinstance(x, mx.sym.Symbol) for x in inputs):
        return mx.sym.contrib.FPNROIAlign(*inputs, name=name, **attrs)
    if not all(isinstance(x, mx.nd.NDArray) for x in inputs):
        raise TypeError("fpn_roi_align: rois and feature_maps must all be mx.sym.Symbol or all "
                        "mx.nd.NDArray")
    _check_arrays(rois, feature_maps)
    return mx.nd.contrib.FPNROIAlign(*inputs, **attrs)


def _check_arrays(rois, feature_maps):
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(f"fpn_roi_align: rois must be (N, 5) [batch_idx, x1, y1, x2, y2], "
                         f"got {rois.shape}")
    for i, fmap in enumerate(feature_maps):
        if fmap.ndim != 4 or fmap.shape[:2] != feature_maps[0].shape[:2]:
            raise ValueError(f"fpn_roi_align: feature_maps[{i}] must be (B, C, H, W) with the B "
                             f"and C of feature_maps[0] {feature_maps[0].shape}, got {fmap.shape}")
    dtypes = {x.dtype for x in [rois, *feature_maps]}
    if len(dtypes) != 1 or dtypes.pop().__name__ not in ("float32", "float64"):
        raise TypeError(f"fpn_roi_align: rois and feature maps must share dtype float32 (or "
                        f"float64), got {[x.dtype.__name__ for x in [rois, *feature_maps]]}; "
                        f"cast fp16/bf16 features with mx.sym.Cast first")
