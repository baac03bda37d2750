"""RPN-only detector (proposals alone): backbone -> neck -> RPN head -> losses / proposals.

It is also the first stage of the two-stage families: Faster R-CNN
(simpledet.detectors.faster_rcnn) derives from it and adds the RoI stage, so the backbone, the
neck, the RPN head, the anchor levels and the loader targets are built in one place.

Separate train and test symbols; components are built in float32, and with ``cfg.precision``
'fp16' / 'bf16' the components in ``cfg.mixed_precision.components`` (of backbone, neck,
rpn_head) compute in low precision, the losses and the proposals in float32 (see
simpledet.models.precision).

It implements the contract of simpledet.detectors.base (layouts there and in
simpledet.data.layout):

Train symbol inputs: data and the RPN anchor targets rpn_label (B, N), rpn_target, rpn_weight
    (B, 4N) for the N anchors of ``rpn_levels`` (see simpledet.models.rpn.base), which the
    loader fills with the RpnAnchorAssigner of ``target_assigners``; the graph reads neither
    im_info nor gt_boxes (no proposals are made in training), so they are no inputs.
Train symbol outputs: MakeLoss ``rpn_cls_loss``, ``rpn_reg_loss``, each the (1,) loss value
    normalized over this device's sampled anchors.
Test symbol: inputs data, im_info; one output ``proposals`` (B, P, 5) [x1, y1, x2, y2, score]
    in network-input pixels, P = ``rpn.test_post_nms``: the pyramid_proposal boxes of each
    image (test pre/post-NMS counts) with their foreground probability, by descending score.
    When fewer than P boxes survive the NMS the op pads by repeating them cyclically (rows
    K.. repeat rows 0..); :meth:`RpnDetector.decode_test_outputs` drops that padding.
"""
import mxnet as mx
import numpy as np

from simpledet.data.targets import RpnAnchorAssigner, levels_table
from simpledet.detectors.base import Detector, detections_to_original
from simpledet.models import RpnHead, build_backbone, build_neck
from simpledet.models.precision import PrecisionPlan

__all__ = ["RpnDetector", "proposal_count"]


def proposal_count(rows):
    """How many leading rows of one image's proposals are real, not the op's padding.

    pyramid_proposal keeps K boxes (distinct after its NMS, unless ``nms_iou`` is 1) and fills
    the remaining rows by repeating rows 0..K-1 cyclically; with K = 0 every row is
    [0, 0, 0, 0] with score 0.

    Args:
        rows: (P, 5) [x1, y1, x2, y2, score] of one image.

    Returns:
        K: the index of the first row equal to row 0 after row 0 (P when none); 0 when row 0
        is the all-zero "no proposal" row.
    """
    rows = np.asarray(rows)
    if not len(rows) or not rows[0].any():
        return 0
    repeats = np.flatnonzero((rows[1:] == rows[0]).all(axis=1))
    return int(repeats[0]) + 1 if len(repeats) else len(rows)


class RpnDetector(Detector):
    """Builds RPN-only symbols from a simpledet.config.rpn.RpnConfig (the attributes: see
    Detector). Subclasses add stages on ``_features`` / ``_rpn_output`` (FasterRcnn)."""

    train_data_names = ("data", "rpn_label", "rpn_target", "rpn_weight")
    test_data_names = ("data", "im_info")
    label_names = ()
    loss_names = ("rpn_cls_loss", "rpn_reg_loss")
    precision_components = ("backbone", "neck", "rpn_head")
    eval_types = ("proposal",)

    def __init__(self, cfg):
        super().__init__(cfg)
        layout = cfg.layout()
        self.backbone = build_backbone(cfg.backbone, layout.backbone_last_stage,
                                       cfg.runtime.num_devices, cfg.runtime.device,
                                       res5_dilation=layout.res5_dilation)
        self.neck = build_neck(cfg.neck, cfg.runtime.num_devices)
        self._check_strides(self.neck.rpn_feature_names, cfg.rpn_feature_strides,
                            "rpn_feature_strides")
        self.rpn_head = RpnHead(cfg.rpn, self.neck.rpn_feature_names, cfg.rpn_feature_strides,
                                **self._rpn_head_options())
        self._levels_cache = {}

    def _check_strides(self, names, strides, what):
        have = tuple(self.neck.strides[n] for n in names)
        if have != tuple(strides):
            raise ValueError(f"neck {type(self.neck).__name__} gives strides {have} but "
                             f"cfg.{what} is {tuple(strides)}")

    def _rpn_head_options(self):
        """Keyword arguments of the RpnHead beyond its section (none: it only scores and
        proposes; Faster R-CNN adds what get_sampled_proposal needs)."""
        return {}

    # --- graph pieces -----------------------------------------------------------------------

    def _features(self, data, plan=None):
        """(rpn feature list, roi feature list), finest first (the second for the families
        with an RoI stage); ``plan`` records the backbone's and the neck's op nodes."""
        plan = plan or PrecisionPlan()
        backbone_features = self.backbone.get_features(data)
        plan.mark("backbone", [data], list(backbone_features.values()))
        features = self.neck.get_features(backbone_features)
        plan.mark("neck", list(backbone_features.values()), list(features.values()))
        return ([features[n] for n in self.neck.rpn_feature_names],
                [features[n] for n in self.neck.roi_feature_names])

    def _rpn_output(self, rpn_features, plan):
        """The RPN head's per-level logits and deltas; ``plan`` records its op nodes."""
        cls_logits, bbox_deltas = self.rpn_head.get_output(rpn_features)
        plan.mark("rpn_head", rpn_features, cls_logits + bbox_deltas)
        return cls_logits, bbox_deltas

    def _loss_group(self, loss_values, plan):
        """mx.sym.Group of one MakeLoss per ``loss_names`` entry, converted by ``plan``."""
        symbol = mx.sym.Group([mx.sym.MakeLoss(loss_values[name], name=name)
                               for name in self.loss_names])
        return plan.apply(symbol, self.train_data_names)

    def get_train_symbol(self):
        """mx.sym.Group of the two RPN MakeLoss outputs (see the module docstring)."""
        inputs = {name: mx.sym.var(name) for name in self.train_data_names}
        plan = PrecisionPlan.from_config(self.cfg)
        rpn_features, _ = self._features(inputs["data"], plan)
        cls_logits, bbox_deltas = self._rpn_output(rpn_features, plan)
        loss_values = self.rpn_head.get_loss(cls_logits, bbox_deltas, inputs["rpn_label"],
                                             inputs["rpn_target"], inputs["rpn_weight"])
        return self._loss_group(loss_values, plan)

    def get_test_symbol(self):
        """The inference symbol: data, im_info -> proposals (B, test_post_nms, 5)."""
        data, im_info = (mx.sym.var(name) for name in self.test_data_names)
        plan = PrecisionPlan.from_config(self.cfg)
        rpn_features, _ = self._features(data, plan)
        cls_logits, bbox_deltas = self._rpn_output(rpn_features, plan)
        rois, scores = self.rpn_head.get_all_proposal_with_score(cls_logits, bbox_deltas,
                                                                 im_info, training=False)
        boxes = mx.sym.slice_axis(rois, axis=1, begin=1, end=5, name="proposals_boxes")
        rows = mx.sym.concat(boxes, scores, dim=1, name="proposals_rows")
        proposals = mx.sym.reshape(rows, shape=(-1, self.cfg.rpn.test_post_nms, 5),
                                   name="proposals")
        return plan.apply(proposals, self.test_data_names)

    # --- what the engine needs --------------------------------------------------------------

    def rpn_levels(self, bucket_h, bucket_w):
        """[(stride, feat_h, feat_w)] of the RPN levels for a padded (bucket_h, bucket_w) input,
        by infer_shape of the RPN logits (the loader's anchor targets must match them)."""
        key = (int(bucket_h), int(bucket_w))
        if key not in self._levels_cache:
            rpn_features, _ = self._features(mx.sym.var("data"))
            cls_logits, _ = self.rpn_head.get_output(rpn_features)
            _, shapes, _ = mx.sym.Group(cls_logits).infer_shape(data=(1, 3) + key)
            self._levels_cache[key] = [(stride, shape[2], shape[3]) for stride, shape
                                       in zip(self.cfg.rpn_feature_strides, shapes)]
        return list(self._levels_cache[key])

    def target_assigners(self, buckets=None):
        """[RpnAnchorAssigner] of cfg.rpn on the levels of ``rpn_levels`` (a table of the
        given buckets, which pickles; all buckets through this detector when None)."""
        levels_fn = self.rpn_levels if buckets is None else levels_table(self.rpn_levels,
                                                                          buckets)
        return [RpnAnchorAssigner.from_config(self.cfg.rpn, levels_fn)]

    def decode_test_outputs(self, outputs, im_info, image_sizes):
        """Per-image proposals in original pixels, without the op's padding rows.

        Args:
            outputs: the test outputs, a list whose one array is proposals (B, P, 5)
                [x1, y1, x2, y2, score] in network-input pixels (or that array itself).
            im_info: (B, 3) of the batch.
            image_sizes: B (height, width) of the original images.

        Returns:
            B dicts {"boxes" (K, 4), "scores" (K,), "classes" (K,) all 1}, by descending
            score, mapped back and clipped as :func:`detections_to_original` does.
        """
        proposals = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
        proposals = np.asarray(proposals, dtype=np.float32)
        dets = np.full(proposals.shape[:2] + (6,), -1, dtype=np.float32)
        for image, rows in enumerate(proposals):
            count = proposal_count(rows)
            dets[image, :count, :5] = rows[:count]
            dets[image, :count, 5] = 1
        return detections_to_original(dets, im_info, image_sizes)

    def fixed_param_patterns(self):
        """Anchored regexes of the parameters not to train (frozen backbone stages and, with
        fixbn, every backbone norm affine); use ``simpledet.models.select_params`` on
        ``symbol.list_arguments()`` to get Module's ``fixed_param_names``."""
        return self.backbone.fixed_param_patterns()

    def backbone_param_patterns(self):
        """Anchored regexes of the backbone's parameter names (res5 of the C4 layout
        included): the parameters a pretrained file must hold when ``pretrain_strict``;
        everything else (neck, RPN, RoI heads) is expected to be initialized. See
        simpledet.engine.pretrained."""
        return self.backbone.param_patterns()
