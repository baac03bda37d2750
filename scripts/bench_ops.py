"""Times each simpledet operator against the stock-MXNet composite doing the same job.

    python scripts/bench_ops.py [--json PATH] [--repeat N] [--ops a,b] [--small]

FPN-sized inputs: an 800x1333 image padded to 800x1344, 2 images, 256 channels, RPN levels
P2-P6, 2000 proposals per level before NMS, 1000 after, 512 rois per image for the box head,
81 classes; mask targets for 128 foreground rois per image at 28 x 28 from polygons of about
30 vertices; RetinaNet ops at 600x800 (P3-P7, 9 anchors per location: 90,360 anchors per
image, 80 classes); the Cascade R-CNN box decode on the box head's 512 rois per image.
Each measurement is the median of --repeat runs after one warm-up, ending with
mx.nd.waitall(); the speedup is stock_s / ours_s from the same run. The JSON holds
{"<op>": {"ours_s": .., "stock_s": .., "speedup": .., "stock": "<what it was compared with>"}}.
"""
import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mxnet as mx  # noqa: E402

import simpledet  # noqa: E402,F401  (loads the op library, sets threads)

STRIDES = (4, 8, 16, 32, 64)
SCALES, RATIOS = (8,), (0.5, 1, 2)
RETINA_STRIDES = (8, 16, 32, 64, 128)


class Setup:
    """Sizes of the benchmark; --small shrinks them for CI smoke runs."""

    def __init__(self, small):
        self.batch = 2
        self.height, self.width = (256, 320) if small else (800, 1344)
        self.channels = 32 if small else 256
        self.rois_per_image = 64 if small else 512
        self.num_classes = 11 if small else 81
        self.pre_nms, self.post_nms = (300, 100) if small else (2000, 1000)
        self.mask_rois = 32 if small else 128  # foreground rois per image for mask targets
        self.feat = [(math.ceil(self.height / s), math.ceil(self.width / s)) for s in STRIDES]
        # RetinaNet: a 600x800 image (256x320 when small), P3-P7, A = 9, C = 80 (20 small).
        retina_h, retina_w = (256, 320) if small else (600, 800)
        self.retina_classes = 20 if small else 80
        self.retina_feat = [(math.ceil(retina_h / s), math.ceil(retina_w / s))
                            for s in RETINA_STRIDES]
        self.retina_size = (retina_h, retina_w)
        self.retina_anchors = 9 * sum(h * w for h, w in self.retina_feat)


def median_time(fn, repeat):
    fn()
    mx.nd.waitall()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        mx.nd.waitall()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_rois(rng, setup, count):
    rows = []
    for b in range(setup.batch):
        x1 = rng.uniform(0, setup.width * 0.8, count)
        y1 = rng.uniform(0, setup.height * 0.8, count)
        side = np.exp(rng.uniform(np.log(8), np.log(min(setup.height, setup.width)), count))
        aspect = np.exp(rng.uniform(-0.7, 0.7, count))
        x2 = np.minimum(x1 + side * aspect, setup.width - 1)
        y2 = np.minimum(y1 + side / aspect, setup.height - 1)
        rows.append(np.stack([np.full(count, b), x1, y1, x2, y2], axis=1))
    return np.concatenate(rows).astype(np.float32)


# ------------------------------------------------------------------ FPN ROIAlign
def bench_fpn_roi_align(setup, rng, repeat):
    from simpledet.ops.fpn_roi_align import fpn_roi_align

    strides = STRIDES[:4]
    maps = [mx.nd.array(rng.standard_normal((setup.batch, setup.channels, h, w)))
            for h, w in setup.feat[:4]]
    rois_np = random_rois(rng, setup, setup.rois_per_image)
    rois = mx.nd.array(rois_np)

    def ours():
        fpn_roi_align(rois, maps, feature_strides=strides, pooled_size=7, sampling_ratio=2)

    def stock():
        # Level assignment as the op does it, then per-level contrib.ROIAlign on that level's
        # rois and a gather back into roi order.
        w = rois_np[:, 3] - rois_np[:, 1] + 1
        h = rois_np[:, 4] - rois_np[:, 2] + 1
        level = np.floor(4 + np.log2(np.sqrt(w * h) / 224 + 1e-6)).clip(2, 5).astype(int) - 2
        parts, order = [], []
        for lvl, stride in enumerate(strides):
            idx = np.nonzero(level == lvl)[0]
            if len(idx) == 0:
                continue
            parts.append(mx.nd.contrib.ROIAlign(maps[lvl], mx.nd.array(rois_np[idx]),
                                                pooled_size=(7, 7), spatial_scale=1.0 / stride,
                                                sample_ratio=2))
            order.append(idx)
        pooled = mx.nd.concat(*parts, dim=0)
        inverse = np.argsort(np.concatenate(order))
        mx.nd.take(pooled, mx.nd.array(inverse), axis=0)

    return median_time(ours, repeat), median_time(stock, repeat)


def bench_fpn_roi_align_backward(setup, rng, repeat):
    """Forward + backward into the maps: the training-time cost."""
    from simpledet.ops.fpn_roi_align import fpn_roi_align

    strides = STRIDES[:4]
    maps = [mx.nd.array(rng.standard_normal((setup.batch, setup.channels, h, w)))
            for h, w in setup.feat[:4]]
    for m in maps:
        m.attach_grad()
    rois_np = random_rois(rng, setup, setup.rois_per_image)
    rois = mx.nd.array(rois_np)
    head_grad = mx.nd.ones((len(rois_np), setup.channels, 7, 7))

    def ours():
        with mx.autograd.record():
            out = fpn_roi_align(rois, maps, feature_strides=strides, pooled_size=7)
        out.backward(head_grad)

    w = rois_np[:, 3] - rois_np[:, 1] + 1
    h = rois_np[:, 4] - rois_np[:, 2] + 1
    level = np.floor(4 + np.log2(np.sqrt(w * h) / 224 + 1e-6)).clip(2, 5).astype(int) - 2
    subsets = [(lvl, np.nonzero(level == lvl)[0]) for lvl in range(4)]
    subsets = [(lvl, mx.nd.array(rois_np[idx]), len(idx)) for lvl, idx in subsets if len(idx)]

    def stock():
        with mx.autograd.record():
            parts = [mx.nd.contrib.ROIAlign(maps[lvl], sub, pooled_size=(7, 7),
                                            spatial_scale=1.0 / strides[lvl], sample_ratio=2)
                     for lvl, sub, _ in subsets]
            out = mx.nd.concat(*parts, dim=0)
        out.backward(head_grad)

    return median_time(ours, repeat), median_time(stock, repeat)


# ------------------------------------------------------------------ pyramid proposal
def rpn_outputs(setup, rng):
    num_anchors = len(SCALES) * len(RATIOS)
    probs, deltas = [], []
    for h, w in setup.feat:
        probs.append(mx.nd.array(rng.uniform(0, 1, (setup.batch, num_anchors, h, w))))
        deltas.append(mx.nd.array(rng.normal(0, 0.1, (setup.batch, 4 * num_anchors, h, w))))
    im_info = mx.nd.array([[setup.height, setup.width, 1.0]] * setup.batch)
    return probs, deltas, im_info


def bench_pyramid_proposal(setup, rng, repeat):
    from simpledet.ops.pyramid_proposal import pyramid_proposal

    probs, deltas, im_info = rpn_outputs(setup, rng)
    two_class = [mx.nd.concat(1 - p, p, dim=1) for p in probs]

    def ours():
        pyramid_proposal(probs, deltas, im_info, feature_strides=STRIDES, scales=SCALES,
                         ratios=RATIOS, pre_nms_top_n=setup.pre_nms,
                         post_nms_top_n=setup.post_nms, nms_threshold=0.7)

    def stock():
        # Per-level MultiProposal (its own NMS), then a cross-level NMS with box_nms and a
        # top-k per image: how a stock-MXNet FPN RPN is assembled.
        per_level = []
        for cls, bbox, stride in zip(two_class, deltas, STRIDES):
            rois, scores = mx.nd.contrib.MultiProposal(
                cls, bbox, im_info, rpn_pre_nms_top_n=setup.pre_nms,
                rpn_post_nms_top_n=setup.post_nms, threshold=0.7, rpn_min_size=0,
                scales=SCALES, ratios=RATIOS, feature_stride=stride, output_score=True)
            per_level.append(mx.nd.concat(rois.reshape((setup.batch, -1, 5)),
                                          scores.reshape((setup.batch, -1, 1)), dim=2))
        merged = mx.nd.concat(*per_level, dim=1)  # (B, L*post, 6) [b, x1, y1, x2, y2, score]
        kept = mx.nd.contrib.box_nms(merged, overlap_thresh=0.7, coord_start=1, score_index=5,
                                     id_index=-1, topk=-1, force_suppress=True)
        kept.slice_axis(axis=1, begin=0, end=setup.post_nms)

    return median_time(ours, repeat), median_time(stock, repeat)


# ------------------------------------------------------------------ detection post-processing
def head_outputs(setup, rng):
    count = setup.batch * setup.rois_per_image
    rois = mx.nd.array(random_rois(rng, setup, setup.rois_per_image))
    logits = rng.standard_normal((count, setup.num_classes)) * 3
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    deltas = mx.nd.array(rng.normal(0, 0.5, (count, 4 * setup.num_classes)))
    im_info = mx.nd.array([[setup.height, setup.width, 1.0]] * setup.batch)
    return rois, mx.nd.array(prob), deltas, im_info


def bench_detection_postprocess(setup, rng, repeat):
    from simpledet.ops.detection_postprocess import detection_postprocess

    rois, prob, deltas, im_info = head_outputs(setup, rng)
    classes, per_image = setup.num_classes, setup.rois_per_image
    stds = mx.nd.array([0.1, 0.1, 0.2, 0.2]).tile(classes)

    def ours():
        detection_postprocess(rois, prob, deltas, im_info, score_thresh=0.05, nms_threshold=0.5,
                              max_det=100)

    def stock():
        # Decode every class with ndarray arithmetic, clip, then class-aware box_nms with a
        # score threshold and top-100 per image.
        boxes = rois.slice_axis(axis=1, begin=1, end=5)
        w = boxes[:, 2:3] - boxes[:, 0:1] + 1
        h = boxes[:, 3:4] - boxes[:, 1:2] + 1
        cx, cy = boxes[:, 0:1] + 0.5 * (w - 1), boxes[:, 1:2] + 0.5 * (h - 1)
        d = (deltas * stds).reshape((-1, classes, 4))
        pcx, pcy = d[:, :, 0] * w + cx, d[:, :, 1] * h + cy
        pw = mx.nd.exp(mx.nd.minimum(d[:, :, 2], 4.135)) * w
        ph = mx.nd.exp(mx.nd.minimum(d[:, :, 3], 4.135)) * h
        x1 = mx.nd.clip(pcx - 0.5 * (pw - 1), 0, setup.width - 1)
        y1 = mx.nd.clip(pcy - 0.5 * (ph - 1), 0, setup.height - 1)
        x2 = mx.nd.clip(pcx + 0.5 * (pw - 1), 0, setup.width - 1)
        y2 = mx.nd.clip(pcy + 0.5 * (ph - 1), 0, setup.height - 1)
        cls_id = mx.nd.arange(classes).reshape((1, classes)).broadcast_like(prob)
        dets = mx.nd.stack(x1, y1, x2, y2, prob, cls_id, axis=2)  # (B*R, C, 6)
        dets = dets.slice_axis(axis=1, begin=1, end=classes)  # drop background
        dets = dets.reshape((setup.batch, per_image * (classes - 1), 6))
        kept = mx.nd.contrib.box_nms(dets, overlap_thresh=0.5, valid_thresh=0.05, topk=-1,
                                     coord_start=0, score_index=4, id_index=5,
                                     force_suppress=False)
        kept.slice_axis(axis=1, begin=0, end=100)

    return median_time(ours, repeat), median_time(stock, repeat)


# ------------------------------------------------------------------ box decode (cascade)
def bench_box_decode(setup, rng, repeat):
    """A Cascade R-CNN stage's sampled rois (both images) and class-agnostic deltas decoded
    into the next stage's rois."""
    from simpledet.ops.box_decode import box_decode

    count = setup.batch * setup.rois_per_image
    rois = mx.nd.array(random_rois(rng, setup, setup.rois_per_image))
    deltas = mx.nd.array(rng.normal(0, 1, (count, 4)))
    im_info = mx.nd.array([[setup.height, setup.width, 1.0], [setup.height * 0.75,
                                                               setup.width, 1.0]])
    stds = mx.nd.array([[0.1, 0.1, 0.2, 0.2]])

    def ours():
        box_decode(rois, deltas, im_info, bbox_stds=(0.1, 0.1, 0.2, 0.2))

    def stock():
        # "+1" decode with ndarray arithmetic, each roi's image size by take() on its batch
        # index, clip by broadcast min/max, batch index concatenated back.
        index = rois.slice_axis(axis=1, begin=0, end=1)
        boxes = rois.slice_axis(axis=1, begin=1, end=5)
        w = boxes[:, 2:3] - boxes[:, 0:1] + 1
        h = boxes[:, 3:4] - boxes[:, 1:2] + 1
        cx, cy = boxes[:, 0:1] + 0.5 * (w - 1), boxes[:, 1:2] + 0.5 * (h - 1)
        d = mx.nd.broadcast_mul(deltas, stds)
        pcx, pcy = d[:, 0:1] * w + cx, d[:, 1:2] * h + cy
        pw = mx.nd.exp(mx.nd.minimum(d[:, 2:3], 4.135)) * w
        ph = mx.nd.exp(mx.nd.minimum(d[:, 3:4], 4.135)) * h
        size = mx.nd.take(im_info, index.reshape((-1,)))  # (N, 3) [h, w, scale]
        max_x, max_y = size[:, 1:2] - 1, size[:, 0:1] - 1
        x1 = mx.nd.maximum(mx.nd.minimum(pcx - 0.5 * (pw - 1), max_x), 0)
        y1 = mx.nd.maximum(mx.nd.minimum(pcy - 0.5 * (ph - 1), max_y), 0)
        x2 = mx.nd.maximum(mx.nd.minimum(pcx + 0.5 * (pw - 1), max_x), 0)
        y2 = mx.nd.maximum(mx.nd.minimum(pcy + 0.5 * (ph - 1), max_y), 0)
        mx.nd.concat(index, x1, y1, x2, y2, dim=1)

    return median_time(ours, repeat), median_time(stock, repeat)


# ------------------------------------------------------------------ proposal target
def numpy_proposal_target(rois, gt, num_classes, image_rois, rng, fg_fraction=0.25):
    """Vectorised NumPy sampling (SimpleDet ran this job as a Python CustomOp); no MXNet op
    does it, so this is the stock alternative."""
    from simpledet.core.boxes import box_iou, encode_boxes

    batch = gt.shape[0]
    per_image = len(rois) // batch
    outputs = []
    for b in range(batch):
        valid = gt[b][gt[b, :, 4] > 0]
        cand = np.concatenate([rois[b * per_image:(b + 1) * per_image, 1:], valid[:, :4]])
        iou = box_iou(cand, valid[:, :4])
        best, arg = iou.max(axis=1), iou.argmax(axis=1)
        fg = np.nonzero(best >= 0.5)[0]
        bg = np.nonzero(best < 0.5)[0]
        fg = rng.choice(fg, min(len(fg), int(round(fg_fraction * image_rois))), replace=False)
        bg = rng.choice(bg, image_rois - len(fg), replace=len(bg) < image_rois - len(fg))
        keep = np.concatenate([fg, bg])
        labels = np.zeros(len(keep), np.float32)
        labels[:len(fg)] = valid[arg[fg], 4]
        targets = np.zeros((len(keep), 4 * num_classes), np.float32)
        deltas = encode_boxes(cand[fg], valid[arg[fg], :4], stds=(0.1, 0.1, 0.2, 0.2))
        for row, (cls, delta) in enumerate(zip(labels[:len(fg)].astype(int), deltas)):
            targets[row, 4 * cls:4 * cls + 4] = delta
        outputs.append((cand[keep], labels, targets, (targets != 0).astype(np.float32)))
    return outputs


def bench_proposal_target(setup, rng, repeat):
    from simpledet.ops.proposal_target import proposal_target

    rois_np = random_rois(rng, setup, setup.post_nms * 2)  # 2000 proposals per image
    gt = np.full((setup.batch, 100, 5), -1, np.float32)
    for b in range(setup.batch):
        boxes = random_rois(rng, setup, 30)[:30, 1:]
        gt[b, :30, :4] = boxes
        gt[b, :30, 4] = rng.integers(1, setup.num_classes, 30)
    rois, gt_nd = mx.nd.array(rois_np), mx.nd.array(gt)

    def ours():
        proposal_target(rois, gt_nd, num_classes=setup.num_classes,
                        image_rois=setup.rois_per_image)

    def stock():
        numpy_proposal_target(rois_np, gt, setup.num_classes, setup.rois_per_image,
                              np.random.default_rng(0))

    return median_time(ours, repeat), median_time(stock, repeat)


# ------------------------------------------------------------------ mask target
def random_gt_polygons(rng, setup, count, vertices=30):
    """count star-shaped polygons of about `vertices` vertices per image, as COCO flat lists."""
    segs = []
    for _ in range(setup.batch):
        image = []
        for _ in range(count):
            n = int(rng.integers(vertices - 5, vertices + 6))
            angles = (np.arange(n) + rng.uniform(-0.3, 0.3, n)) * 2 * np.pi / n
            radii = rng.uniform(0.6, 1.0, n) * np.exp(rng.uniform(np.log(8), np.log(150)))
            cx, cy = rng.uniform(0, setup.width), rng.uniform(0, setup.height)
            image.append([np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)],
                                   axis=1).ravel()])
        segs.append(image)
    return segs


def coco_mask_targets(rois, gt_index, segs, mask_size):
    """Per roi: polygons shifted and scaled into the roi frame, then pycocotools frPyObjects +
    merge + decode at M x M (how a Python mask-target CustomOp does it)."""
    from pycocotools import mask as mask_utils

    out = np.full((len(rois), mask_size, mask_size), -1, np.float32)
    for r, (roi, g) in enumerate(zip(rois, gt_index)):
        if g < 0:
            continue
        x1, y1 = roi[1], roi[2]
        scale = mask_size / np.maximum(roi[3:5] - roi[1:3] + 1, 1)
        polys = [((np.asarray(p).reshape(-1, 2) - (x1, y1)) * scale).ravel().tolist()
                 for p in segs[int(roi[0])][int(g)]]
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, mask_size, mask_size))
        out[r] = mask_utils.decode(rle)
    return out


def bench_mask_target(setup, rng, repeat):
    from simpledet.core.masks import encode_polygons
    from simpledet.ops.mask_target import mask_target

    num_gt, mask_size = 20, 28
    segs = random_gt_polygons(rng, setup, num_gt)
    gt_polys = np.stack([encode_polygons(s, num_gt, 128) for s in segs])
    rows, index = [], []
    for b, image in enumerate(segs):
        g = rng.integers(0, num_gt, setup.mask_rois)
        for j in g:
            pts = image[j][0].reshape(-1, 2)
            lo, hi = pts.min(0), pts.max(0)
            jitter = rng.normal(0, 0.1, 4) * np.tile(hi - lo, 2)
            rows.append([b, *(lo + jitter[:2]), *(hi - 1 + jitter[2:])])
        index.append(g)
    rois_np = np.array(rows, np.float32)
    index_np = np.concatenate(index).astype(np.float32)
    rois, gt_index, polys = mx.nd.array(rois_np), mx.nd.array(index_np), mx.nd.array(gt_polys)

    def ours():
        mask_target(rois, gt_index, polys, mask_size=mask_size)

    def stock():
        coco_mask_targets(rois_np, index_np, segs, mask_size)
# ------------------------------------------------------------------ RetinaNet focal loss
def retina_labels(setup, rng):
    """Per image ~150 foreground anchors, ~1,500 ignored, the rest background."""
    labels = np.zeros((setup.batch, setup.retina_anchors), np.float32)
    for b in range(setup.batch):
        idx = rng.permutation(setup.retina_anchors)
        labels[b, idx[:150]] = rng.integers(1, setup.retina_classes + 1, 150)
        labels[b, idx[150:1650]] = -1
    return labels


def stock_focal_loss(logits, labels, alpha=0.25, gamma=2.0):
    """Sigmoid focal loss from stock ops (log(p_t) written directly; the softplus-stable form
    would add ops). logits (B, N, C), labels (B, N): 0 background, 1..C, -1 ignored."""
    classes = logits.shape[-1]
    p = mx.nd.sigmoid(logits)
    target = mx.nd.one_hot(labels - 1, depth=classes)
    valid = mx.nd.expand_dims(labels >= 0, axis=-1)
    p_t = target * p + (1 - target) * (1 - p)
    alpha_t = target * alpha + (1 - target) * (1 - alpha)
    terms = -alpha_t * mx.nd.power(1 - p_t, gamma) * mx.nd.log(p_t)
    return mx.nd.sum(mx.nd.broadcast_mul(terms, valid)) / mx.nd.maximum(mx.nd.sum(labels > 0), 1)


def bench_sigmoid_focal_loss(setup, rng, repeat):
    """Forward + backward into the logits: the training-time cost."""
    from simpledet.ops.focal_loss import sigmoid_focal_loss

    shape = (setup.batch, setup.retina_anchors, setup.retina_classes)
    logits = mx.nd.array(rng.normal(-4.6, 1.5, shape))  # prior 0.01 bias, some spread
    logits.attach_grad()
    labels = mx.nd.array(retina_labels(setup, rng))

    def timed(fn):
        def step():
            with mx.autograd.record():
                loss = fn(logits, labels)
            loss.backward()
        return step

    return (median_time(timed(sigmoid_focal_loss), repeat),
            median_time(timed(stock_focal_loss), repeat))


# ------------------------------------------------------------------ RetinaNet post-processing
def bench_retina_postprocess(setup, rng, repeat):
    from simpledet.core.anchors import grid_anchors
    from simpledet.ops.retina_postprocess import RETINA_SCALES, retina_postprocess

    classes, num_anchors = setup.retina_classes, 9
    probs, deltas = [], []
    for h, w in setup.retina_feat:
        logits = rng.normal(-6.0, 1.5, (setup.batch, num_anchors * classes, h, w))
        probs.append(mx.nd.array(1 / (1 + np.exp(-logits))))  # ~3% of scores above 0.05
        deltas.append(mx.nd.array(rng.normal(0, 0.2, (setup.batch, 4 * num_anchors, h, w))))
    height, width = setup.retina_size
    im_info = mx.nd.array([[height, width, 1.0]] * setup.batch)
    anchors = [mx.nd.array(grid_anchors(s, RETINA_SCALES, (0.5, 1, 2), h, w))
               for s, (h, w) in zip(RETINA_STRIDES, setup.retina_feat)]

    def ours():
        retina_postprocess(probs, deltas, im_info, feature_strides=RETINA_STRIDES)

    def stock():
        # Per level: topk over (anchor, class) scores, gather anchors and deltas, ndarray
        # decode + clip; then one class-aware box_nms over the levels with the 0.05 threshold.
        per_level = []
        for prob, delta, anchor in zip(probs, deltas, anchors):
            _, _, h, w = prob.shape
            # (B, A*C, H, W) -> (B, H*W*A*C) in (y, x, a, c) order, the anchors' order.
            flat = prob.reshape((setup.batch, num_anchors * classes, h * w)).transpose((0, 2, 1))
            flat = flat.reshape((setup.batch, -1))
            score, idx = mx.nd.topk(flat, k=min(1000, flat.shape[1]), ret_typ="both")
            anchor_idx = mx.nd.floor(idx / classes)
            cls_id = idx - anchor_idx * classes + 1  # classes 1..C, as ours
            box_delta = delta.reshape((setup.batch, num_anchors, 4, h * w))
            box_delta = box_delta.transpose((0, 3, 1, 2)).reshape((setup.batch, -1, 4))
            rows = []
            for b in range(setup.batch):
                a = mx.nd.take(anchor, anchor_idx[b])
                d = mx.nd.take(box_delta[b], anchor_idx[b])
                wid = a[:, 2:3] - a[:, 0:1] + 1
                hei = a[:, 3:4] - a[:, 1:2] + 1
                cx, cy = a[:, 0:1] + 0.5 * (wid - 1), a[:, 1:2] + 0.5 * (hei - 1)
                pcx, pcy = d[:, 0:1] * wid + cx, d[:, 1:2] * hei + cy
                pw = mx.nd.exp(mx.nd.minimum(d[:, 2:3], 4.135)) * wid
                ph = mx.nd.exp(mx.nd.minimum(d[:, 3:4], 4.135)) * hei
                box = mx.nd.concat(mx.nd.clip(pcx - 0.5 * (pw - 1), 0, width - 1),
                                   mx.nd.clip(pcy - 0.5 * (ph - 1), 0, height - 1),
                                   mx.nd.clip(pcx + 0.5 * (pw - 1), 0, width - 1),
                                   mx.nd.clip(pcy + 0.5 * (ph - 1), 0, height - 1), dim=1)
                rows.append(mx.nd.concat(box, score[b].reshape((-1, 1)),
                                         cls_id[b].reshape((-1, 1)), dim=1))
            per_level.append(mx.nd.stack(*rows))
        merged = mx.nd.concat(*per_level, dim=1)  # (B, L*1000, 6)
        kept = mx.nd.contrib.box_nms(merged, overlap_thresh=0.5, valid_thresh=0.05, topk=-1,
                                     coord_start=0, score_index=4, id_index=5,
                                     force_suppress=False)
        return kept.slice_axis(axis=1, begin=0, end=100)

    return median_time(ours, repeat), median_time(stock, repeat)


# What each op is compared with, as printed in the JSON.
STOCK_IMPL = {
    "pyramid_proposal": "per-level contrib.MultiProposal + concat + contrib.box_nms",
    "fpn_roi_align": "level assignment + per-level contrib.ROIAlign + gather",
    "fpn_roi_align_backward": "per-level contrib.ROIAlign forward+backward",
    "proposal_target": "vectorised NumPy (no MXNet op does this job)",
    "detection_postprocess": "ndarray decode + clip + class-aware contrib.box_nms",
    "mask_target": "per-roi NumPy shift/scale + pycocotools frPyObjects + merge + decode",
    "sigmoid_focal_loss": "sigmoid/one_hot/power/log/sum ndarray composite, forward+backward",
    "retina_postprocess": "per-level topk + take + ndarray decode/clip + class-aware box_nms",
    "box_decode": "ndarray decode + take(im_info, batch index) + broadcast clip + concat",
}

BENCHES = {
    "pyramid_proposal": bench_pyramid_proposal,
    "fpn_roi_align": bench_fpn_roi_align,
    "fpn_roi_align_backward": bench_fpn_roi_align_backward,
    "proposal_target": bench_proposal_target,
    "detection_postprocess": bench_detection_postprocess,
    "mask_target": bench_mask_target,
    "sigmoid_focal_loss": bench_sigmoid_focal_loss,
    "retina_postprocess": bench_retina_postprocess,
    "box_decode": bench_box_decode,
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--ops", default=",".join(BENCHES), help="comma-separated subset")
    parser.add_argument("--small", action="store_true", help="tiny sizes (smoke test)")
    args = parser.parse_args(argv)
    names = args.ops.split(",")
    unknown = sorted(set(names) - set(BENCHES))
    if unknown:
        parser.error(f"unknown op(s) {unknown}; choose from {sorted(BENCHES)}")
    setup = Setup(args.small)
    results = {}
    print(f"{'op':26s} {'ours (s)':>10s} {'stock (s)':>10s} {'speedup':>8s}")
    for name in names:
        ours_s, stock_s = BENCHES[name](setup, np.random.default_rng(0), args.repeat)
        results[name] = {"ours_s": ours_s, "stock_s": stock_s, "speedup": stock_s / ours_s,
                         "stock": STOCK_IMPL[name]}
        print(f"{name:26s} {ours_s:10.4f} {stock_s:10.4f} {stock_s / ours_s:7.2f}x", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
