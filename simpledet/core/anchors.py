"""Anchor generation, identical to the C++ ops and to MXNet's contrib.MultiProposal.

Convention ("+1", as py-faster-rcnn, MultiProposal and the original SimpleDet): a box
[x1, y1, x2, y2] covers pixels x1..x2, so its width is x2 - x1 + 1. Anchor k of a location is
ratio index k // len(scales), scale index k % len(scales).
"""
import numpy as np


def base_anchors(stride, scales, ratios):
    """The A = len(ratios) * len(scales) anchors of the location at (0, 0).

    Args:
        stride: feature stride in pixels (the base box is stride x stride).
        scales: anchor sizes in units of the stride (SimpleDet's FPN uses (8,)).
        ratios: height / width aspect ratios, e.g. (0.5, 1, 2).

    Returns:
        (A, 4) float32 [x1, y1, x2, y2].
    """
    size = float(stride) * float(stride)
    ctr = 0.5 * (stride - 1.0)
    out = []
    for ratio in ratios:
        base_w = np.floor(np.sqrt(np.floor(size / ratio)) + 0.5)
        base_h = np.floor(base_w * ratio + 0.5)
        for scale in scales:
            w, h = base_w * scale, base_h * scale
            out.append([ctr - 0.5 * (w - 1), ctr - 0.5 * (h - 1),
                        ctr + 0.5 * (w - 1), ctr + 0.5 * (h - 1)])
    return np.asarray(out, dtype=np.float32)


def grid_anchors(stride, scales, ratios, height, width):
    """All anchors of an (height, width) feature map, ordered (y, x, anchor).

    Returns:
        (height * width * A, 4) float32; row (y * width + x) * A + a is anchor a at (y, x).
    """
    base = base_anchors(stride, scales, ratios)
    xs = np.arange(width, dtype=np.float32) * stride
    ys = np.arange(height, dtype=np.float32) * stride
    sx, sy = np.meshgrid(xs, ys)
    shifts = np.stack([sx, sy, sx, sy], axis=-1).reshape(-1, 1, 4)
    return (shifts + base[None]).reshape(-1, 4).astype(np.float32)
