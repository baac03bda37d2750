"""NumPy box arithmetic in the "+1" convention (see anchors.py), mirroring
operator_cxx/common/box_utils.h so Python references and C++ ops agree."""
import numpy as np

# dw/dh clip: log(1000/16), so exp() cannot overflow on a bad regression.
BOX_DELTA_CLIP = np.log(1000.0 / 16)


def box_area(boxes):
    boxes = np.asarray(boxes, dtype=np.float32)
    return (boxes[..., 2] - boxes[..., 0] + 1) * (boxes[..., 3] - boxes[..., 1] + 1)


def box_iou(a, b):
    """IoU matrix of boxes a (N, 4) and b (M, 4): (N, M) float32."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    return (inter / np.maximum(union, 1e-12)).astype(np.float32)


def encode_boxes(src, dst, means=(0, 0, 0, 0), stds=(1, 1, 1, 1)):
    """Regression targets (dx, dy, dw, dh) taking src boxes to dst boxes, normalized
    as (t - means) / stds. src, dst: (N, 4). Returns (N, 4) float32."""
    src = np.asarray(src, dtype=np.float32)
    dst = np.asarray(dst, dtype=np.float32)
    sw, sh = src[:, 2] - src[:, 0] + 1, src[:, 3] - src[:, 1] + 1
    scx, scy = src[:, 0] + 0.5 * (sw - 1), src[:, 1] + 0.5 * (sh - 1)
    dw, dh = dst[:, 2] - dst[:, 0] + 1, dst[:, 3] - dst[:, 1] + 1
    dcx, dcy = dst[:, 0] + 0.5 * (dw - 1), dst[:, 1] + 0.5 * (dh - 1)
    t = np.stack([(dcx - scx) / sw, (dcy - scy) / sh, np.log(dw / sw), np.log(dh / sh)], axis=1)
    return ((t - np.asarray(means, np.float32)) / np.asarray(stds, np.float32)).astype(np.float32)


def decode_boxes(boxes, deltas, means=(0, 0, 0, 0), stds=(1, 1, 1, 1)):
    """Applies normalized deltas (N, 4) to boxes (N, 4); inverse of encode_boxes.
    dw/dh are clipped at BOX_DELTA_CLIP after de-normalization."""
    boxes = np.asarray(boxes, dtype=np.float32)
    d = np.asarray(deltas, dtype=np.float32) * np.asarray(stds, np.float32) + np.asarray(
        means, np.float32)
    w, h = boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1
    cx, cy = boxes[:, 0] + 0.5 * (w - 1), boxes[:, 1] + 0.5 * (h - 1)
    pcx, pcy = d[:, 0] * w + cx, d[:, 1] * h + cy
    pw = np.exp(np.minimum(d[:, 2], BOX_DELTA_CLIP)) * w
    ph = np.exp(np.minimum(d[:, 3], BOX_DELTA_CLIP)) * h
    return np.stack([pcx - 0.5 * (pw - 1), pcy - 0.5 * (ph - 1),
                     pcx + 0.5 * (pw - 1), pcy + 0.5 * (ph - 1)], axis=1).astype(np.float32)


def clip_boxes(boxes, height, width):
    """Clips boxes (N, 4) to an image of the given size (pixel indices 0..size-1)."""
    out = np.asarray(boxes, dtype=np.float32).copy()
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width - 1)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height - 1)
    return out


def nms(boxes, scores, iou_thresh, max_keep=-1):
    """Greedy NMS; ties in score keep the lower index first (as the C++ ops do).

    Returns kept indices in descending-score order, at most max_keep (<= 0: all).
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float32), kind="stable")
    keep = []
    suppressed = np.zeros(len(order), dtype=bool)
    for i, idx in enumerate(order):
        if suppressed[i]:
            continue
        keep.append(idx)
        if 0 < max_keep <= len(keep):
            break
        rest = order[i + 1:]
        suppressed[i + 1:] |= box_iou(boxes[idx], boxes[rest])[0] > iou_thresh
    return np.asarray(keep, dtype=np.int64)
