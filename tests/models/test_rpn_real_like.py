"""The RPN's three readers of one layout agree on real-like portrait batches.

The loader writes anchor targets (simpledet.data.anchor_target), the RPN loss reads them against
the head's per-level outputs, and pyramid_proposal decodes those outputs with its own anchors.
If the three disagreed on the order of (level, anchor, y, x), on the anchors or on height vs
width, the RPN would learn one thing and propose another: invisible on square-ish landscape
data, so here the maps are portrait (H > W), the scale is not 1 and there are many boxes.
"""
import mxnet as mx
import numpy as np
import pytest

from simpledet.config import FasterRcnnConfig
from simpledet.core.boxes import box_iou
from simpledet.data import anchor_target as AT
from simpledet.detectors import FasterRcnn
from simpledet.ops import pyramid_proposal

BUCKET = (480, 320)  # portrait bucket of short 320 / long 480
IM_INFO = np.array([[480, 320, 0.75], [427, 320, 0.6667]], np.float32)


def real_like_gt(rng, count, height, width):
    """count boxes of 4..0.6*side pixels inside an (height, width) image, plus one box covering
    almost all of it."""
    w = rng.uniform(4, width * 0.6, count)
    h = rng.uniform(4, height * 0.6, count)
    x = rng.uniform(0, width - w)
    y = rng.uniform(0, height - h)
    boxes = np.stack([x, y, x + w - 1, y + h - 1], axis=1)
    boxes = np.concatenate([boxes, [[1, 2, width - 2, height - 1]]])
    return np.round(boxes, 2).astype(np.float32)


@pytest.fixture(scope="module")
def setup():
    cfg = FasterRcnnConfig()
    cfg.pretrain = None
    cfg.backbone.depth = 18
    cfg.backbone.normalizer = "bn"
    cfg.neck.channels = 16
    cfg.rpn.conv_channels = 16
    cfg.input.short, cfg.input.long = 320, 480
    cfg.freeze()
    model = FasterRcnn(cfg)
    levels = model.rpn_levels(*BUCKET)
    rng = np.random.default_rng(0)
    gts, targets = [], []
    for b, count in enumerate((44, 9)):
        gt = real_like_gt(rng, count, *IM_INFO[b, :2])
        gts.append(gt)
        targets.append(AT.assign_anchor_targets(gt, IM_INFO[b], levels, cfg.rpn.anchor_scales,
                                                cfg.rpn.anchor_ratios, rng=rng,
                                                batch_size=cfg.rpn.batch_per_image))
    batch = {k: np.stack([t[k] for t in targets]) for k in ("labels", "targets", "weights")}
    return cfg, model, levels, gts, batch


def level_maps(flat, levels, num_anchors, channels_per_anchor=1):
    """(B, N*c) loader rows -> per level (B, A*c, H, W) maps, as the head's outputs are laid out."""
    per_image = [AT.split_levels(row, levels, num_anchors, channels_per_anchor) for row in flat]
    return [np.stack([img[lvl] for img in per_image]) for lvl in range(len(levels))]


def test_portrait_levels_come_from_the_graph(setup):
    cfg, _, levels, _, batch = setup
    assert levels == AT.feature_levels(*BUCKET, cfg.rpn_feature_strides)
    assert all(h > w for _, h, w in levels[:-1])  # 120x80 ... 15x10 (P6 is 8x5)
    assert batch["labels"].shape[1] == AT.num_level_anchors(levels, cfg.rpn.anchor_scales,
                                                            cfg.rpn.anchor_ratios)


def test_loss_of_the_targets_themselves_is_zero_and_normalized_by_sampled_anchors(setup):
    cfg, model, levels, _, batch = setup
    num_anchors = cfg.rpn.num_anchors
    names = [f"p{i}" for i in range(len(levels))]
    logits = [mx.sym.var(f"logit_{n}") for n in names]
    deltas = [mx.sym.var(f"delta_{n}") for n in names]
    label, target, weight = (mx.sym.var(n) for n in ("rpn_label", "rpn_target", "rpn_weight"))
    loss = model.rpn_head.get_loss(logits, deltas, label, target, weight)
    group = mx.sym.Group([loss["rpn_cls_loss"], loss["rpn_reg_loss"]])
    rng = np.random.default_rng(1)
    flat_logits = rng.normal(0, 2, batch["labels"].shape).astype(np.float32)
    inputs = {"rpn_label": batch["labels"], "rpn_target": batch["targets"],
              "rpn_weight": batch["weights"]}
    for name, logit_map, delta_map in zip(names, level_maps(flat_logits, levels, num_anchors),
                                          level_maps(batch["targets"], levels, num_anchors, 4)):
        inputs[f"logit_{name}"] = logit_map
        inputs[f"delta_{name}"] = delta_map
    args = {k: mx.nd.array(v) for k, v in inputs.items()}
    cls_loss, reg_loss = (o.asnumpy() for o in group.bind(mx.cpu(), args).forward())
    assert reg_loss[0] == 0  # the deltas sit exactly where the loss reads the targets
    z, x = batch["labels"], flat_logits
    count = (z >= 0).sum()
    assert count == 2 * cfg.rpn.batch_per_image
    bce = np.logaddexp(0, x) - x * np.maximum(z, 0)
    np.testing.assert_allclose(cls_loss, [(bce * (z >= 0)).sum() / count], rtol=1e-5)
    # zero deltas: smooth L1 (beta 1/9) of the targets, over the same count
    args.update({f"delta_{n}": mx.nd.zeros_like(args[f"delta_{n}"]) for n in names})
    _, reg_loss = (o.asnumpy() for o in group.bind(mx.cpu(), args).forward())
    d = np.abs(batch["targets"])
    sl1 = np.where(d < 1 / 9, 4.5 * d * d, d - 0.5 / 9)
    np.testing.assert_allclose(reg_loss, [(sl1 * batch["weights"]).sum() / count], rtol=1e-5)


def test_proposals_decoded_from_the_targets_are_the_gt_boxes(setup):
    """Foreground score 1 on the positive anchors and the loader's targets as deltas: every
    proposal scoring 1 must be the gt box its anchor was matched to, clipped by its own
    image's im_info (height 427 vs 480 in the same portrait bucket)."""
    cfg, _, levels, gts, batch = setup
    num_anchors = cfg.rpn.num_anchors
    probs = level_maps((batch["labels"] == 1).astype(np.float32), levels, num_anchors)
    deltas = level_maps(batch["targets"], levels, num_anchors, 4)
    post = int((batch["labels"] == 1).sum(axis=1).max())
    rois, scores = pyramid_proposal(
        [mx.nd.array(p) for p in probs], [mx.nd.array(d) for d in deltas], mx.nd.array(IM_INFO),
        feature_strides=cfg.rpn_feature_strides, scales=cfg.rpn.anchor_scales,
        ratios=cfg.rpn.anchor_ratios, pre_nms_top_n=10000, post_nms_top_n=post,
        nms_threshold=1.0)
    rois, scores = rois.asnumpy().reshape(2, post, 5), scores.asnumpy().reshape(2, post)
    anchors = AT.level_anchors(levels, cfg.rpn.anchor_scales, cfg.rpn.anchor_ratios)
    for b in range(2):
        positive = np.flatnonzero(batch["labels"][b] == 1)
        chosen = rois[b, scores[b] == 1]
        assert len(chosen) == len(positive) and (chosen[:, 0] == b).all()
        # each positive anchor's matched gt (first highest IoU), as a multiset of boxes
        matched = gts[b][box_iou(anchors[positive], gts[b]).argmax(axis=1)]
        got = chosen[np.lexsort(chosen[:, 1:].T[::-1]), 1:]
        want = matched[np.lexsort(matched.T[::-1])]
        np.testing.assert_allclose(got, want, rtol=0, atol=2e-3)
        height, width = IM_INFO[b, :2]
        assert rois[b, :, [1, 3]].max() <= width - 1 and rois[b, :, [2, 4]].max() <= height - 1


def test_reg_beta_zero_is_weighted_l1(setup):
    """rpn.reg_beta = 0 makes the anchor regression loss L1; rpn.reg_loss_weight scales it."""
    cfg, _, levels, _, batch = setup
    tuned = cfg.copy()
    tuned.rpn.reg_beta = 0.0
    tuned.rpn.reg_loss_weight = 2.5
    tuned.freeze()
    head = FasterRcnn(tuned).rpn_head
    names = [f"p{i}" for i in range(len(levels))]
    deltas = [mx.sym.var(f"delta_{n}") for n in names]
    logits = [mx.sym.var(f"logit_{n}") for n in names]
    label, target, weight = (mx.sym.var(n) for n in ("rpn_label", "rpn_target", "rpn_weight"))
    reg = head.get_loss(logits, deltas, label, target, weight)["rpn_reg_loss"]
    num_anchors = cfg.rpn.num_anchors
    rng = np.random.default_rng(2)
    pred = rng.normal(0, 0.05, batch["targets"].shape).astype(np.float32)  # mostly |d| < 1/9
    args = {"rpn_label": batch["labels"], "rpn_target": batch["targets"],
            "rpn_weight": batch["weights"]}
    for name, delta_map in zip(names, level_maps(pred, levels, num_anchors, 4)):
        args[f"delta_{name}"] = delta_map
    args = {k: mx.nd.array(v) for k, v in args.items() if k in reg.list_arguments()}
    (value,) = (o.asnumpy() for o in reg.bind(mx.cpu(), args).forward())
    count = (batch["labels"] >= 0).sum()
    l1 = np.abs(pred - batch["targets"]) * batch["weights"]
    np.testing.assert_allclose(value, [2.5 * l1.sum() / count], rtol=1e-5)
