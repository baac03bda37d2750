"""Mask R-CNN (FPN): Faster R-CNN plus a mask branch on the foreground RoIs.

Train: the sampler (simpledet.ops.proposal_target) puts each image's foreground RoIs first,
at most round(fg_fraction * S) of them, and also returns each RoI's matched gt row; the first
``cfg.mask_rois_per_image`` rows of every image (all of its foreground, the rest background,
whose targets are ignored) are pooled 14x14 from P2-P5 by their own RoIAlign, the mask head
predicts (R, K, 28, 28) logits, and the mask-target op (simpledet.ops.mask_target) rasterises
each foreground RoI's gt polygons (loader input ``gt_polys``) into 28x28 targets; the loss is
the binary cross-entropy of the gt class's channel over the foreground pixels.

Test (as detectron2): the box head's final detections (after NMS) are the mask RoIs; each
gets the sigmoid mask of its detected class. Outputs: ``dets`` (B, D, 6) as Faster R-CNN and
``masks`` (B, D, M, M) in the frame of each detection's box; ``decode_test_outputs`` pastes them
into the original image size and RLE-encodes them (simpledet.core.masks).

Inputs: Faster R-CNN's (see simpledet.detectors.faster_rcnn; gt_crowd with
``roi_sampler.crowd_iof``), then ``gt_polys`` (B, G, L) float32, the padded polygons of each gt
row (simpledet.data.targets.GtPolygonAssigner).
Losses: Faster R-CNN's four, then ``mask_loss``.
"""
import mxnet as mx
import numpy as np

from simpledet.data.targets import GtPolygonAssigner
from simpledet.detectors.base import detections_to_original
from simpledet.detectors.faster_rcnn import FasterRcnn
from simpledet.models import FpnRoiExtractor
from simpledet.models.mask_head import ConvMaskHead
from simpledet.models.precision import PrecisionPlan
from simpledet.ops import mask_target

__all__ = ["MaskRcnn"]


def _first_rows(symbol, per_image, keep, width, name):
    """Rows [0, keep) of each image's block of ``per_image`` rows: (B*per_image, *width) ->
    (B*keep, *width)."""
    blocks = mx.sym.reshape(symbol, shape=(-1, per_image) + width, name=f"{name}_blocks")
    head = mx.sym.slice_axis(blocks, axis=1, begin=0, end=keep, name=f"{name}_head")
    return mx.sym.reshape(head, shape=(-1,) + width, name=f"{name}_rows")


def _detection_rois(dets, name):
    """(B*D, 5) [batch_idx, x1, y1, x2, y2] RoIs of the (B, D, 6) detections."""
    boxes = mx.sym.slice_axis(dets, axis=2, begin=0, end=4, name=f"{name}_boxes")
    first = mx.sym.slice_axis(dets, axis=2, begin=0, end=1, name=f"{name}_col")
    index = mx.sym.contrib.arange_like(dets, axis=0, name=f"{name}_image")
    index = mx.sym.broadcast_like(mx.sym.reshape(index, shape=(-1, 1, 1),
                                                 name=f"{name}_image_col"),
                                  first, name=f"{name}_image_index")
    rois = mx.sym.concat(index, boxes, dim=2, name=f"{name}_concat")
    return mx.sym.reshape(rois, shape=(-1, 5), name=f"{name}_rois")


class MaskRcnn(FasterRcnn):
    """Builds Mask R-CNN symbols from a MaskRcnnConfig (see the module docstring)."""

    train_data_names = FasterRcnn.train_data_names + ("gt_polys",)
    loss_names = FasterRcnn.loss_names + ("mask_loss",)
    precision_components = FasterRcnn.precision_components + ("mask_head",)
    eval_types = ("bbox", "segm")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.mask_roi_extractor = FpnRoiExtractor(cfg.mask_roi_extractor,
                                                  cfg.roi_feature_strides, prefix="mask_roi_")
        self.mask_head = ConvMaskHead(cfg.mask_head, cfg.num_classes, cfg.mask_size)

    def _mask_output(self, roi_features, rois, plan):
        """Mask logits (R, K, M, M) of ``rois``; ``plan`` records the head's op nodes."""
        mask_feat = self.mask_roi_extractor.get_roi_feature(roi_features, rois)
        mask_logit = self.mask_head.get_output(mask_feat)
        plan.mark("mask_head", [mask_feat], [mask_logit])
        return mask_logit

    def get_train_symbol(self):
        """mx.sym.Group of the five MakeLoss outputs (see the module docstring)."""
        cfg = self.cfg
        inputs = {name: mx.sym.var(name) for name in self.train_data_names}
        plan = PrecisionPlan.from_config(cfg)
        loss_values, state = self._two_stage_losses(inputs, plan, with_gt_index=True)
        per_image, keep = cfg.roi_sampler.batch_per_image, cfg.mask_rois_per_image
        mask_rois = _first_rows(state["rois"], per_image, keep, (5,), "mask_rois")
        mask_label = _first_rows(state["label"], per_image, keep, (), "mask_label")
        mask_gt_index = _first_rows(state["gt_index"], per_image, keep, (), "mask_gt_index")
        targets = mx.sym.BlockGrad(
            mask_target(mask_rois, mask_gt_index, inputs["gt_polys"], mask_size=cfg.mask_size,
                        name="mask_target"), name="mask_target_blockgrad")
        mask_logit = self._mask_output(state["roi_features"], mask_rois, plan)
        loss_values.update(self.mask_head.get_loss(mask_logit, mask_label, targets))
        return self._loss_group(loss_values, plan)

    def get_test_symbol(self):
        """data, im_info -> dets (B, D, 6), masks (B, D, M, M)."""
        cfg = self.cfg
        inputs = {name: mx.sym.var(name) for name in self.test_data_names}
        plan = PrecisionPlan.from_config(cfg)
        dets, roi_features = self._detections(inputs, plan)
        mask_logit = self._mask_output(roi_features, _detection_rois(dets, "mask_det"), plan)
        classes = mx.sym.reshape(mx.sym.slice_axis(dets, axis=2, begin=5, end=6,
                                                   name="mask_det_class"),
                                 shape=(-1,), name="mask_det_classes")
        probs = self.mask_head.get_prediction(mask_logit, classes)
        masks = mx.sym.reshape(probs, shape=(-1, cfg.test.max_det, cfg.mask_size,
                                             cfg.mask_size), name="masks")
        return plan.apply(mx.sym.Group([dets, masks]), self.test_data_names)

    def target_assigners(self, buckets=None):
        """The RPN anchor targets (FasterRcnn's), then the gt polygons."""
        return super().target_assigners(buckets) + [
            GtPolygonAssigner.from_config(self.cfg.input, self.cfg.mask_target)]

    def decode_test_outputs(self, outputs, im_info, image_sizes):
        """Faster R-CNN's per-image dicts plus "masks": one COCO RLE dict per detection, its
        mask pasted into the original image (threshold 0.5, simpledet.core.masks)."""
        from simpledet.core.masks import masks_to_rle, paste_masks

        dets, masks = (np.asarray(o) for o in outputs[:2])
        results = detections_to_original(dets, im_info, image_sizes)
        for result, image_dets, image_masks, (height, width) in zip(results, dets, masks,
                                                                    image_sizes):
            kept = image_masks[image_dets[:, 5] >= 1]
            pasted = paste_masks(kept, result["boxes"], height, width)
            result["masks"] = masks_to_rle(pasted)
        return results
