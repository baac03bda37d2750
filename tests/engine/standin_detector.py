"""A tiny detector implementing the contract (simpledet.detectors.base.Detector), and tiny COCO
data, for the engine tests: the engine is tested against the contract, not against FasterRcnn.

Train graph: stem conv (fixed by pattern) -> BatchNorm -> conv -> per-anchor logits and deltas
at stride 8 trained on the loader's rpn_label / rpn_target / rpn_weight (a one-level RPN).
Test graph: one detection per image at a known place, [0.1 w, 0.1 h, 0.5 w, 0.5 h] of the
network input (im_info), score 0.9, class 1, then a padding row of -1.
"""
import functools
import json
import os

import cv2
import numpy as np

from simpledet.config.faster_rcnn import FasterRcnnConfig
from simpledet.data.anchor_target import feature_levels
from simpledet.data.targets import RpnAnchorAssigner
from simpledet.detectors.base import Detector

STRIDE = 8
NUM_ANCHORS = 3


class StandInDetector(Detector):
    train_data_names = ("data", "im_info", "gt_boxes", "rpn_label", "rpn_target", "rpn_weight")
    test_data_names = ("data", "im_info")
    loss_names = ("rpn_cls_loss", "rpn_reg_loss")
    precision_components = ()

    def __init__(self, cfg=None):
        super().__init__(cfg)

    def rpn_levels(self, bucket_h, bucket_w):
        return feature_levels(bucket_h, bucket_w, (STRIDE,))

    def target_assigners(self, buckets=None):
        assert self.cfg.rpn.num_anchors == NUM_ANCHORS
        levels_fn = functools.partial(feature_levels, strides=(STRIDE,))
        return [RpnAnchorAssigner.from_config(self.cfg.rpn, levels_fn)]

    def fixed_param_patterns(self):
        return [r"^stem_conv_"]

    def backbone_param_patterns(self):
        return [r"^stem_"]

    def _features(self, data):
        import mxnet as mx

        x = mx.sym.Convolution(data, num_filter=4, kernel=(3, 3), pad=(1, 1), name="stem_conv")
        x = mx.sym.BatchNorm(x, fix_gamma=False, name="stem_bn")
        x = mx.sym.Activation(x, act_type="relu", name="stem_relu")
        return mx.sym.Convolution(x, num_filter=8, kernel=(3, 3), stride=(STRIDE, STRIDE),
                                  pad=(1, 1), name="body_conv")

    def get_train_symbol(self):
        import mxnet as mx

        data, label = mx.sym.var("data"), mx.sym.var("rpn_label")
        target, weight = mx.sym.var("rpn_target"), mx.sym.var("rpn_weight")
        im_info, gt_boxes = mx.sym.var("im_info"), mx.sym.var("gt_boxes")
        feat = self._features(data)
        logits = mx.sym.Convolution(feat, num_filter=NUM_ANCHORS, kernel=(1, 1), name="rpn_cls")
        deltas = mx.sym.Convolution(feat, num_filter=4 * NUM_ANCHORS, kernel=(1, 1),
                                    name="rpn_reg")
        logits = mx.sym.reshape(logits, shape=(0, -1))  # (B, A*H*W): (a, y, x) order
        deltas = mx.sym.reshape(deltas, shape=(0, -1))
        valid = label >= 0
        prob = mx.sym.sigmoid(logits)
        bce = -(label * mx.sym.log(prob + 1e-6) + (1 - label) * mx.sym.log(1 - prob + 1e-6))
        cls = mx.sym.sum(bce * valid) / mx.sym.maximum(mx.sym.sum(valid), 1.0)
        reg = mx.sym.sum(mx.sym.smooth_l1(deltas - target, scalar=3.0) * weight)
        reg = reg / mx.sym.maximum(mx.sym.sum(valid), 1.0)
        # gt_boxes and im_info are inputs of the real detector; the stand-in ignores them.
        reg = reg + 0 * mx.sym.sum(gt_boxes) + 0 * mx.sym.sum(im_info)
        return mx.sym.Group([mx.sym.MakeLoss(cls, name="rpn_cls_loss"),
                             mx.sym.MakeLoss(reg, name="rpn_reg_loss")])

    def get_test_symbol(self):
        import mxnet as mx

        data, im_info = mx.sym.var("data"), mx.sym.var("im_info")
        feat = self._features(data)
        zero = mx.sym.mean(feat, axis=(1, 2, 3), keepdims=False) * 0  # (B,), ties params in
        h = mx.sym.slice_axis(im_info, axis=1, begin=0, end=1)  # (B, 1)
        w = mx.sym.slice_axis(im_info, axis=1, begin=1, end=2)
        ones = mx.sym.ones_like(h)
        row = mx.sym.concat(0.1 * w, 0.1 * h, 0.5 * w, 0.5 * h, 0.9 * ones, ones, dim=1)
        row = mx.sym.broadcast_add(row, mx.sym.reshape(zero, shape=(-1, 1)))
        pad = mx.sym.broadcast_mul(-ones, mx.sym.ones((1, 6)))
        dets = mx.sym.stack(row, pad, axis=1)  # (B, 2, 6)
        return mx.sym.identity(dets, name="dets")


def write_tiny_coco(root, split, sizes, class_names=("a", "b")):
    """Writes images of the given (h, w) sizes with one or two boxes each, COCO layout.

    Returns:
        (ann_file, image_dir).
    """
    image_dir = os.path.join(root, "images", split)
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    rng = np.random.default_rng(len(sizes))
    images, annotations = [], []
    for i, (h, w) in enumerate(sizes, 1):
        pixels = rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)
        name = f"{i:04d}.png"
        cv2.imwrite(os.path.join(image_dir, name), pixels)
        images.append({"id": i, "file_name": name, "height": h, "width": w})
        for k in range(1 + i % 2):
            bw, bh = w // 3, h // 3
            annotations.append({"id": len(annotations) + 1, "image_id": i,
                                "category_id": 1 + k, "bbox": [2 + k * 5, 3, bw, bh],
                                "area": float(bw * bh), "iscrowd": 0})
    ann_file = os.path.join(root, "annotations", f"instances_{split}.json")
    with open(ann_file, "w") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": [{"id": i + 1, "name": n} for i, n in enumerate(class_names)]},
                  f)
    return ann_file, image_dir


def tiny_config(root, **changes):
    """A frozen FasterRcnnConfig for the tiny data: one CPU context, batch 4, 20 iterations,
    lr steps at 12 and 16, 4 warmup iterations, no pretrained weights."""
    cfg = FasterRcnnConfig()
    cfg.name = "tiny"
    cfg.output_root = os.path.join(str(root), "experiments")
    cfg.pretrain = None
    cfg.backbone.normalizer = "bn"
    cfg.dataset.root = str(root)
    cfg.dataset.train_split = "train"
    cfg.dataset.val_split = "val"
    cfg.dataset.class_names = ("a", "b")
    cfg.input.short, cfg.input.long = 32, 48
    cfg.input.loader_workers = 0
    cfg.input.max_num_gt = 4
    cfg.rpn.anchor_scales = (2.0,)  # 16-pixel anchors fit the tiny images
    cfg.runtime.device, cfg.runtime.device_ids, cfg.runtime.kvstore = "cpu", (0,), "local"
    cfg.train.images_per_device = 4
    cfg.train.iters_at_batch16 = 5  # x 16 / 4 images = 20 iterations
    cfg.train.lr_steps_at_batch16 = (3, 4)
    cfg.train.warmup_iters = 4
    cfg.train.lr_per_16_images = 0.08
    cfg.train.log_interval = 5
    cfg.train.checkpoint_interval = 10
    for key, value in changes.items():
        cfg.set(key, value)
    cfg.freeze()
    return cfg
