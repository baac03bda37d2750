"""RPN anchor targets: which anchors are foreground/background and where they should move.

The rules are py-faster-rcnn's AnchorTargetLayer (as the original SimpleDet uses them), in the
"+1" box convention, vectorised over all anchors of all pyramid levels:

1. anchors crossing the image (im_info height/width, not the padded bucket) by more than
   allowed_border pixels are ignored (-1); allowed_border < 0 disables the rule;
2. the remaining anchors are negative (0) if their max IoU with any gt is < neg_thresh;
3. each gt's best anchors (all tied at that gt's max IoU, if it is > 0 and >= min_pos_iou) are
   positive (1): py-faster-rcnn's and detectron2's low-quality matches; min_pos_iou > 0
   (mmdetection's RPN uses 0.3) leaves a gt too small or odd for any anchor without them;
4. anchors with max IoU >= pos_thresh are positive (1); the rest stay ignored (-1);
5. crowd regions (COCO iscrowd=1 boxes) are ignore regions: a negative (0) anchor whose
   intersection with one crowd box covers more than crowd_iof of its own area (IoF, "+1"
   areas; detectron2 and SimpleDet use 0.5) becomes ignored (-1); positives are kept, and
   without crowd boxes (or with crowd_iof None) nothing changes;
6. sampling keeps at most fg_fraction * batch_size positives and fills batch_size with
   negatives; the excess is set to -1 at random.

Output layout, which the RPN loss in the graph reshapes: per level (stride, H, W) with
A = len(scales) * len(ratios), labels are (A, H, W) and targets/weights (4A, H, W) with channel
a * 4 + k; over levels they are concatenated flat: labels (sum_l A*H_l*W_l,) in (level, a, y, x)
order and targets/weights (sum_l 4A*H_l*W_l,) in (level, a*4+k, y, x) order.
"""
import functools
import math

import numpy as np

from simpledet.core.anchors import grid_anchors
from simpledet.core.boxes import encode_boxes


def feature_levels(bucket_h, bucket_w, strides):
    """Feature map sizes of a padded (bucket_h, bucket_w) input: [(stride, ceil(h/s), ceil(w/s))].

    Use ``functools.partial(feature_levels, strides=(4, 8, 16, 32, 64))`` as the loader's
    ``levels_fn`` for FPN (P2-P6) and ``strides=(16,)`` for C4; a partial pickles, so worker
    processes can receive it.
    """
    return [(int(s), math.ceil(bucket_h / s), math.ceil(bucket_w / s)) for s in strides]


def _as_level_key(levels):
    return tuple((int(s), int(h), int(w)) for s, h, w in levels)


@functools.lru_cache(maxsize=16)
def _cached_anchors(level_key, scales, ratios):
    parts = []
    for stride, height, width in level_key:
        grid = grid_anchors(stride, scales, ratios, height, width)  # (H*W*A, 4), (y, x, a)
        num_anchors = len(scales) * len(ratios)
        parts.append(grid.reshape(height, width, num_anchors, 4).transpose(2, 0, 1, 3)
                     .reshape(-1, 4))
    anchors = np.ascontiguousarray(np.concatenate(parts, axis=0), dtype=np.float32)
    anchors.setflags(write=False)
    return anchors


def num_level_anchors(levels, scales, ratios):
    """N = sum_l A * H_l * W_l, the length of the labels."""
    return len(scales) * len(ratios) * sum(h * w for _, h, w in levels)


def level_anchors(levels, scales, ratios):
    """All anchors of all levels in the output order (level, a, y, x).

    Args:
        levels: [(stride, feat_h, feat_w), ...].
        scales, ratios: as simpledet.core.anchors.base_anchors.

    Returns:
        (N, 4) float32, read-only (cached), N = sum_l A * H_l * W_l.
    """
    return _cached_anchors(_as_level_key(levels), tuple(float(s) for s in scales),
                           tuple(float(r) for r in ratios))


def inside_image(anchors, im_info, allowed_border):
    """(N,) bool: anchors that cross the (unpadded) image by at most allowed_border pixels;
    all True when allowed_border < 0."""
    if allowed_border < 0:
        return np.ones(len(anchors), dtype=bool)
    height, width = float(im_info[0]), float(im_info[1])
    b = float(allowed_border)
    return ((anchors[:, 0] >= -b) & (anchors[:, 1] >= -b) &
            (anchors[:, 2] < width + b) & (anchors[:, 3] < height + b))


def _gt_xyxy(gt_boxes):
    """(G, >=4) -> (G, 4) float32; an empty input of any shape -> (0, 4)."""
    gt = np.asarray(gt_boxes, dtype=np.float32)
    return gt.reshape(0, 4) if gt.size == 0 else gt.reshape(len(gt), -1)[:, :4]


def label_anchors(gt_boxes, im_info, levels, scales, ratios, *, pos_thresh=0.7,
                  neg_thresh=0.3, allowed_border=0, min_pos_iou=0.0, crowd_boxes=None,
                  crowd_iof=0.5):
    """Labels before sampling (rules 1-5 of the module docstring).

    Gives exactly what a dense IoU matrix of all inside anchors against all gt would, without
    building it: on a grid, an anchor's overlap width depends only on its column and its
    overlap height only on its row, so each gt only touches a small rectangle of each level,
    whose IoUs are an outer product (same float32 arithmetic as core.boxes.box_iou).

    Args:
        gt_boxes: (G, >=4) [x1, y1, x2, y2, ...] in resized-image pixels; G may be 0.
        im_info: [height, width, scale] of the resized image.
        levels, scales, ratios: the anchors, see level_anchors.
        crowd_boxes: None or (M, >=4) crowd regions in resized-image pixels; M may be 0.
        crowd_iof: the IoF above which a negative anchor inside a crowd region is ignored
            (rule 5); None disables the rule.

    Returns:
        labels (N,) int8 in {1, 0, -1}; matched (N,) int64, index of the first gt with the
        highest IoU (0 when all IoUs are 0; -1 where there is no gt or the anchor is outside).
    """
    anchors = level_anchors(levels, scales, ratios)
    inside = inside_image(anchors, im_info, allowed_border)
    labels = np.full(len(anchors), -1, dtype=np.int8)
    matched = np.full(len(anchors), -1, dtype=np.int64)
    gt = _gt_xyxy(gt_boxes)
    if len(gt) == 0:
        labels[inside] = 0
    else:
        max_iou, argmax, is_best = _grid_overlaps(anchors, levels, len(scales) * len(ratios),
                                                  gt, inside, min_pos_iou)
        inside_labels = np.full(len(anchors), -1, dtype=np.int8)
        inside_labels[max_iou < neg_thresh] = 0
        inside_labels[is_best] = 1
        inside_labels[max_iou >= pos_thresh] = 1
        labels[inside] = inside_labels[inside]
        matched[inside] = argmax[inside]
    crowd = _gt_xyxy(crowd_boxes if crowd_boxes is not None else ())
    if crowd_iof is not None and len(crowd):
        negative = np.flatnonzero(labels == 0)
        labels[negative[in_crowd(anchors[negative], crowd, crowd_iof)]] = -1
    return labels, matched


def in_crowd(anchors, crowd_boxes, crowd_iof=0.5):
    """(N,) bool: anchors whose intersection with some crowd box is more than crowd_iof of
    the anchor's own area (intersection over foreground, "+1" convention, float32).

    Args:
        anchors: (N, 4) [x1, y1, x2, y2].
        crowd_boxes: (M, >=4) [x1, y1, x2, y2, ...]; M may be 0 (all False).
    """
    anchors = np.asarray(anchors, dtype=np.float32).reshape(-1, 4)
    crowd = _gt_xyxy(crowd_boxes)
    inside = np.zeros(len(anchors), dtype=bool)
    if len(crowd) == 0 or len(anchors) == 0:
        return inside
    one = np.float32(1)
    area = (anchors[:, 2] - anchors[:, 0] + one) * (anchors[:, 3] - anchors[:, 1] + one)
    for box in crowd:  # M is small (a few crowd regions per image): no (N, M) matrix
        iw = np.minimum(anchors[:, 2], box[2]) - np.maximum(anchors[:, 0], box[0]) + one
        ih = np.minimum(anchors[:, 3], box[3]) - np.maximum(anchors[:, 1], box[1]) + one
        inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
        inside |= inter > np.float32(crowd_iof) * area
    return inside


def _grid_overlaps(anchors, levels, num_anchors, gt, inside, min_pos_iou=0.0):
    """Per anchor: max IoU over gt, first gt reaching it, and whether it is some gt's best
    (inside) anchor with that IoU >= min_pos_iou. Outside anchors count as IoU 0. All (N,) in
    (level, a, y, x) order."""
    max_iou = np.zeros(len(anchors), dtype=np.float32)
    argmax = np.zeros(len(anchors), dtype=np.int64)
    is_best = np.zeros(len(anchors), dtype=bool)
    gt_area = (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1)
    gt_max = np.zeros(len(gt), dtype=np.float32)
    blocks = []  # (gt index, level views, block window, block max) for the second pass
    start = 0
    for _, height, width in levels:
        count = num_anchors * height * width
        grid = anchors[start:start + count].reshape(num_anchors, height, width, 4)
        views = (max_iou[start:start + count].reshape(num_anchors, height, width),
                 argmax[start:start + count].reshape(num_anchors, height, width),
                 is_best[start:start + count].reshape(num_anchors, height, width),
                 inside[start:start + count].reshape(num_anchors, height, width),
                 grid[:, 0, :, 0], grid[:, 0, :, 2], grid[:, :, 0, 1], grid[:, :, 0, 3])
        start += count
        for j in range(len(gt)):
            window, iou = _block_iou(views, gt[j], gt_area[j])
            if window is None:
                continue
            level_max, level_arg = views[0][window], views[1][window]
            better = iou > level_max  # strict: ties keep the earlier gt, as argmax does
            level_max[better] = iou[better]
            level_arg[better] = j
            block_max = iou.max()
            gt_max[j] = max(gt_max[j], block_max)
            blocks.append((j, views, window, block_max))
    for j, views, window, block_max in blocks:
        if block_max > 0 and block_max >= min_pos_iou and block_max == gt_max[j]:
            _, iou = _block_iou(views, gt[j], gt_area[j])
            views[2][window] |= iou == gt_max[j]
    return max_iou, argmax, is_best


def _block_iou(views, gt, gt_area):
    """IoU of one gt with the anchors of one level that can overlap it.

    Returns (window: index tuple into (A, H, W), iou (A, h, w) float32 with outside anchors
    zeroed), or (None, None) when no anchor overlaps the gt."""
    inside, x1, x2, y1, y2 = views[3], views[4], views[5], views[6], views[7]
    iw = np.clip(np.minimum(x2, gt[2]) - np.maximum(x1, gt[0]) + 1, 0, None)  # (A, W)
    ih = np.clip(np.minimum(y2, gt[3]) - np.maximum(y1, gt[1]) + 1, 0, None)  # (A, H)
    cols = np.flatnonzero(iw.any(axis=0))
    rows = np.flatnonzero(ih.any(axis=0))
    if len(cols) == 0 or len(rows) == 0:
        return None, None
    window = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    ys, xs = window[1], window[2]
    inter = iw[:, None, xs] * ih[:, ys, None]
    area = (x2[:, None, xs] - x1[:, None, xs] + 1) * (y2[:, ys, None] - y1[:, ys, None] + 1)
    iou = inter / np.maximum((area + gt_area) - inter, 1e-12)
    iou *= inside[window]
    return window, iou


def subsample_labels(labels, batch_size, fg_fraction, rng):
    """Keeps at most int(fg_fraction * batch_size) positives and batch_size - #positives
    negatives, chosen uniformly by rng; the others become -1. Returns a new array."""
    labels = labels.copy()
    fg = np.flatnonzero(labels == 1)
    max_fg = int(fg_fraction * batch_size)
    if len(fg) > max_fg:
        labels[fg] = -1
        labels[rng.choice(fg, max_fg, replace=False)] = 1
    max_bg = batch_size - int(np.count_nonzero(labels == 1))
    bg = np.flatnonzero(labels == 0)
    if len(bg) > max_bg:
        labels[bg] = -1
        labels[rng.choice(bg, max_bg, replace=False)] = 0
    return labels


def to_channel_layout(per_anchor, levels, num_anchors):
    """(N, 4) rows in (level, a, y, x) order -> flat (4N,) in (level, a*4+k, y, x) order."""
    parts, start = [], 0
    for _, height, width in levels:
        count = num_anchors * height * width
        block = per_anchor[start:start + count].reshape(num_anchors, height, width, 4)
        parts.append(block.transpose(0, 3, 1, 2).reshape(-1))
        start += count
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def channel_index(flat, levels, num_anchors):
    """Positions in the (level, a*4+k, y, x) layout of the 4 values of anchors given by their
    (level, a, y, x) indices: (P,) -> (P, 4)."""
    sizes = np.array([num_anchors * h * w for _, h, w in levels])
    offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    level = np.searchsorted(np.cumsum(sizes), flat, side="right")
    local = flat - offsets[level]
    plane = np.array([h * w for _, h, w in levels])[level]  # H * W of the anchor's level
    a, yx = local // plane, local % plane
    k = np.arange(4)
    return (4 * offsets[level] + a * 4 * plane + yx)[:, None] + k[None, :] * plane[:, None]


def split_levels(flat, levels, num_anchors, channels_per_anchor=1):
    """Inverse view of the concatenation: flat -> [(A * c, H_l, W_l) per level]."""
    out, start = [], 0
    for _, height, width in levels:
        count = num_anchors * channels_per_anchor * height * width
        out.append(flat[start:start + count].reshape(num_anchors * channels_per_anchor, height,
                                                      width))
        start += count
    return out


def assign_anchor_targets(gt_boxes, im_info, levels, scales, ratios, *, pos_thresh=0.7,
                          neg_thresh=0.3, batch_size=256, fg_fraction=0.5, allowed_border=0,
                          min_pos_iou=0.0, crowd_boxes=None, crowd_iof=0.5, rng, out=None):
    """RPN classification and regression targets of one image.

    Args:
        gt_boxes: (G, >=4) [x1, y1, x2, y2, ...] in resized-image pixels; G may be 0.
        im_info: [height, width, scale] of the resized (unpadded) image.
        levels: [(stride, feat_h, feat_w)] -- one entry for C4, five for FPN P2-P6.
        scales, ratios: anchor shapes (simpledet.core.anchors).
        pos_thresh, neg_thresh, batch_size, fg_fraction, allowed_border, min_pos_iou,
            crowd_iof: see the module docstring.
        crowd_boxes: None or (M, >=4) crowd (iscrowd) regions in resized-image pixels: ignore
            regions for negatives (rule 5); M may be 0.
        rng: np.random.Generator used for sampling.
        out: optional dict of preallocated float32 arrays "labels" (N,), "targets" (4N,),
            "weights" (4N,) to fill (the loader passes slices of its batch arrays).

    Returns:
        dict with, N = sum_l A * H_l * W_l:
          "labels": (N,) float32 in {1, 0, -1}, order (level, a, y, x);
          "targets": (4N,) float32 encode_boxes(anchor, matched gt) (means 0, stds 1) for
              positives, 0 elsewhere, order (level, a*4+k, y, x);
          "weights": (4N,) float32, 1 for positives, 0 elsewhere, same order.
    """
    labels, matched = label_anchors(gt_boxes, im_info, levels, scales, ratios,
                                    pos_thresh=pos_thresh, neg_thresh=neg_thresh,
                                    allowed_border=allowed_border, min_pos_iou=min_pos_iou,
                                    crowd_boxes=crowd_boxes, crowd_iof=crowd_iof)
    labels = subsample_labels(labels, batch_size, fg_fraction, rng)
    if out is None:
        out = {"labels": np.empty(len(labels), dtype=np.float32),
               "targets": np.zeros(4 * len(labels), dtype=np.float32),
               "weights": np.zeros(4 * len(labels), dtype=np.float32)}
    else:
        for key, size in (("labels", len(labels)), ("targets", 4 * len(labels)),
                          ("weights", 4 * len(labels))):
            if out[key].shape != (size,):
                raise ValueError(f"out[{key!r}] has shape {out[key].shape}, expected ({size},)")
    fill_anchor_targets(labels, matched, gt_boxes, levels, scales, ratios, out)
    return out


def anchor_max_iou(gt_boxes, im_info, levels, scales, ratios, *, allowed_border=0):
    """(N,) float32: each anchor's max IoU with ``gt_boxes`` (0 for anchors outside the image
    by more than allowed_border, and when there is no gt), in (level, a, y, x) order; the same
    float32 arithmetic as :func:`label_anchors` (TridentNet ignores anchors on the gt outside
    a branch's range with it)."""
    anchors = level_anchors(levels, scales, ratios)
    gt = _gt_xyxy(gt_boxes)
    if len(gt) == 0:
        return np.zeros(len(anchors), dtype=np.float32)
    inside = inside_image(anchors, im_info, allowed_border)
    max_iou, _, _ = _grid_overlaps(anchors, levels, len(scales) * len(ratios), gt, inside)
    return max_iou


def fill_anchor_targets(labels, matched, gt_boxes, levels, scales, ratios, out):
    """Writes sampled labels and their regression targets into ``out``.

    Args:
        labels: (N,) sampled labels in {1, 0, -1}; matched: (N,) the gt row of each anchor
            (:func:`label_anchors`), read where labels is 1.
        gt_boxes, levels, scales, ratios: as :func:`assign_anchor_targets`.
        out: {"labels" (N,), "targets" (4N,), "weights" (4N,)} float32 arrays, overwritten.
    """
    num_anchors = len(scales) * len(ratios)
    out["targets"].fill(0)
    out["weights"].fill(0)
    np.copyto(out["labels"], labels, casting="unsafe")
    positive = np.flatnonzero(labels == 1)
    if len(positive):
        anchors = level_anchors(levels, scales, ratios)
        deltas = encode_boxes(anchors[positive], _gt_xyxy(gt_boxes)[matched[positive]])
        index = channel_index(positive, levels, num_anchors)  # (P, 4)
        out["targets"][index] = deltas
        out["weights"][index] = 1.0
