"""The FPN train graph on a real-like batch: portrait bucket, two images of different sizes and
scales in it, 45 boxes in one image (gt padding rows of -1), labels up to 80.

Checks, against NumPy, what the graph computes between the RPN and the box head: the
proposals (per image, clipped to that image's im_info), the sampled RoIs with their labels and
box targets (ProposalTarget), and the RoIAlign features (FPNROIAlign on portrait maps).
"""
import math
import warnings

import mxnet as mx
import numpy as np
import pytest

from simpledet.config import FasterRcnnConfig
from simpledet.core.boxes import box_iou, decode_boxes
from simpledet.data import anchor_target as AT
from simpledet.detectors import FasterRcnn

BUCKET = (480, 320)
IM_INFO = np.array([[480, 320, 0.75], [427, 320, 0.6667]], np.float32)
NUM_GT = (45, 7)
INTERNALS = ("rpn_proposal_output0", "rpn_sampled_rois_output", "rpn_sampled_label_output",
             "rpn_sampled_bbox_target_output", "rpn_sampled_bbox_weight_output",
             "roi_align_output", "fpn_p2_conv_output", "fpn_p3_conv_output",
             "fpn_p4_conv_output", "fpn_p5_conv_output", "rpn_cls_loss_output",
             "rpn_reg_loss_output", "bbox_cls_loss_output", "bbox_reg_loss_output")


def tiny_cfg():
    cfg = FasterRcnnConfig()  # the 80 COCO classes: labels 1..80
    cfg.pretrain = None
    cfg.backbone.depth = 18
    cfg.backbone.normalizer = "bn"
    cfg.neck.channels = 8
    cfg.rpn.conv_channels = 8
    cfg.bbox_head.fc_dim = 16
    cfg.input.short, cfg.input.long = 320, 480
    cfg.rpn.train_pre_nms, cfg.rpn.train_post_nms = 500, 300
    cfg.roi_sampler.batch_per_image = 256
    cfg.freeze()
    return cfg


def real_like_batch(cfg, model, rng):
    gt_boxes = np.full((2, cfg.input.max_num_gt, 5), -1, np.float32)
    levels = model.rpn_levels(*BUCKET)
    targets = []
    for b, count in enumerate(NUM_GT):
        height, width = IM_INFO[b, :2]
        w = rng.uniform(6, width * 0.7, count)
        h = rng.uniform(6, height * 0.7, count)
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        boxes = np.stack([x, y, x + w - 1, y + h - 1], axis=1).astype(np.float32)
        boxes[0] = [0.5, 1, width - 1, height - 1.5]  # most of the image
        gt_boxes[b, :count, :4] = boxes
        gt_boxes[b, :count, 4] = rng.integers(1, 81, count)
        gt_boxes[b, 0, 4], gt_boxes[b, 1, 4] = 80, 1
        targets.append(AT.assign_anchor_targets(boxes, IM_INFO[b], levels, cfg.rpn.anchor_scales,
                                                cfg.rpn.anchor_ratios, rng=rng))
    data = rng.standard_normal((2, 3) + BUCKET).astype(np.float32)
    for b in range(2):  # zero padding below and right of each image, as the loader's
        data[b, :, int(IM_INFO[b, 0]):, :] = 0
        data[b, :, :, int(IM_INFO[b, 1]):] = 0
    return {"data": data, "im_info": IM_INFO, "gt_boxes": gt_boxes,
            "rpn_label": np.stack([t["labels"] for t in targets]),
            "rpn_target": np.stack([t["targets"] for t in targets]),
            "rpn_weight": np.stack([t["weights"] for t in targets]),
            "gt_crowd": np.full((2, cfg.input.max_num_crowd, 4), -1, np.float32)}  # none


@pytest.fixture(scope="module")
def outputs():
    cfg = tiny_cfg()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = FasterRcnn(cfg)
    mx.random.seed(0)
    batch = real_like_batch(cfg, model, np.random.default_rng(0))
    internals = model.get_train_symbol().get_internals()
    group = mx.sym.Group([internals[name] for name in INTERNALS])
    shapes = {k: v.shape for k, v in batch.items()}
    exe = group.simple_bind(mx.cpu(), grad_req="null", **shapes)
    init = model.initializer()
    for name, array in exe.arg_dict.items():
        if name in batch:
            array[:] = batch[name]
        else:
            init(mx.init.InitDesc(name, attrs=group.attr_dict().get(name, {})), array)
    for name, array in exe.aux_dict.items():  # BatchNorm moving statistics
        array[:] = 1 if name.endswith("_var") else 0
    values = [o.asnumpy() for o in exe.forward(is_train=True)]
    mx.nd.waitall()
    return cfg, batch, dict(zip(INTERNALS, values))


def image_gt(batch, b):
    gt = batch["gt_boxes"][b]
    return gt[gt[:, 4] > 0]


def test_losses_are_finite(outputs):
    _, _, out = outputs
    for name in INTERNALS[-4:]:
        assert out[name].shape == (1,) and np.isfinite(out[name]).all(), name


def test_proposals_are_per_image_and_clipped_to_its_own_im_info(outputs):
    cfg, _, out = outputs
    rois = out["rpn_proposal_output0"].reshape(2, cfg.rpn.train_post_nms, 5)
    for b in range(2):
        height, width = IM_INFO[b, :2]
        assert (rois[b, :, 0] == b).all()
        assert rois[b, :, 1:].min() >= 0
        assert rois[b, :, [1, 3]].max() <= width - 1 and rois[b, :, [2, 4]].max() <= height - 1
        assert rois[b, :, 4].max() > width  # the image is portrait: y reaches past x's range


def test_sampled_rois_labels_and_targets_match_numpy(outputs):
    cfg, batch, out = outputs
    per_image = cfg.roi_sampler.batch_per_image
    rois = out["rpn_sampled_rois_output"].reshape(2, per_image, 5)
    labels = out["rpn_sampled_label_output"].reshape(2, per_image)
    targets = out["rpn_sampled_bbox_target_output"].reshape(2, per_image, 81, 4)
    weights = out["rpn_sampled_bbox_weight_output"].reshape(2, per_image, 81, 4)
    stds = np.array(cfg.bbox_head.reg_std, np.float32)
    for b in range(2):
        gt = image_gt(batch, b)
        assert len(gt) == NUM_GT[b]
        assert (rois[b, :, 0] == b).all()
        iou = box_iou(rois[b, :, 1:], gt[:, :4])
        max_iou, arg = iou.max(axis=1), iou.argmax(axis=1)
        fg, bg = labels[b] > 0, labels[b] == 0
        # candidates: the image's proposals, then its gt boxes (padding rows excluded)
        proposals = out["rpn_proposal_output0"].reshape(2, -1, 5)[b, :, 1:]
        candidates = np.concatenate([proposals, gt[:, :4]])
        num_fg = int((box_iou(candidates, gt[:, :4]).max(axis=1) >= cfg.roi_sampler.fg_iou).sum())
        assert num_fg >= NUM_GT[b]
        assert fg.sum() == min(round(cfg.roi_sampler.fg_fraction * per_image), num_fg)
        assert fg.sum() + bg.sum() == per_image
        assert (max_iou[fg] >= cfg.roi_sampler.fg_iou).all()
        assert (max_iou[bg] < cfg.roi_sampler.bg_iou_hi).all()
        np.testing.assert_array_equal(labels[b, fg], gt[arg[fg], 4])
        # class-specific targets in columns 4c..4c+3 (c up to 80) decode back to the gt
        cls = labels[b, fg].astype(int)
        rows = np.flatnonzero(fg)
        t = targets[b, rows, cls]
        np.testing.assert_allclose(decode_boxes(rois[b, rows, 1:], t * stds), gt[arg[fg], :4],
                                   rtol=0, atol=1e-2)
        assert (weights[b, rows, cls] == 1).all()
        assert weights[b].sum() == 4 * fg.sum() and not targets[b, ~fg].any()


def test_roi_align_reads_portrait_maps_at_the_roi_positions(outputs):
    """Each sampled roi pooled from the level of FPN eq. 1 equals MXNet's contrib.ROIAlign on
    that level's portrait map."""
    cfg, _, out = outputs
    maps = [out[f"fpn_p{lvl}_conv_output"] for lvl in (2, 3, 4, 5)]
    assert [m.shape[2:] for m in maps] == [(120, 80), (60, 40), (30, 20), (15, 10)]
    rois = out["rpn_sampled_rois_output"]
    pooled = out["roi_align_output"]
    roi_cfg = cfg.roi_extractor
    levels = []
    for x1, y1, x2, y2 in rois[:, 1:]:
        size = math.sqrt((x2 - x1 + 1) * (y2 - y1 + 1))
        level = math.floor(roi_cfg.canonical_level + math.log2(size / roi_cfg.canonical_scale
                                                                 + 1e-6))
        levels.append(min(max(level, 2), 5))
    levels = np.array(levels)
    assert len(set(levels.tolist())) >= 3
    for level, fmap, stride in zip((2, 3, 4, 5), maps, cfg.roi_feature_strides):
        rows = np.flatnonzero(levels == level)
        if not len(rows):
            continue
        want = mx.nd.contrib.ROIAlign(mx.nd.array(fmap), mx.nd.array(rois[rows]),
                                      pooled_size=(roi_cfg.pooled_size,) * 2,
                                      spatial_scale=1.0 / stride,
                                      sample_ratio=roi_cfg.sampling_ratio,
                                      aligned=roi_cfg.aligned).asnumpy()
        np.testing.assert_allclose(pooled[rows], want, rtol=1e-4, atol=1e-5)
