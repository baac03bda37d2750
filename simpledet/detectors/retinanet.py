"""RetinaNet: backbone -> P3-P7 FPN -> shared class / box towers -> focal loss | post-processing.

A one-stage detector (Lin et al. 2017b): no proposals and no RoIs; every anchor of every level
is classified (a sigmoid per foreground class) and regressed. Separate train and test symbols;
components are built in float32 and, with ``cfg.precision`` 'fp16' / 'bf16', the components of
``cfg.mixed_precision.components`` (backbone, neck, the head's towers and predictor convs) are
converted to low precision while the focal loss, the box loss, the sigmoid and the
post-processing stay float32 (simpledet.models.precision).

It implements the contract of simpledet.detectors.base. Layouts: simpledet.models.dense_heads
(RetinaHead) and simpledet.data.targets.retina.

Train symbol inputs: data (B, 3, Hb, Wb) and the anchor targets of ``target_assigners`` (one
RetinaAnchorAssigner): retina_label (B, N), retina_target and retina_weight (B, 4N), N the
anchors of ``anchor_levels``. The train graph reads neither im_info nor gt_boxes (the loader's
batches hold them; Module takes only the named inputs).
Train symbol outputs: MakeLoss ``retina_cls_loss`` (focal loss over the foreground count of the
    batch on this device) and ``retina_reg_loss`` (smooth L1 over the same count).
Test symbol: inputs data, im_info; one output dets (B, max_det, 6) [x1, y1, x2, y2, score,
    class] in network-input pixels (decoded by the base's decode_test_outputs).
"""
import mxnet as mx

from simpledet.data.targets import RetinaAnchorAssigner, levels_table
from simpledet.detectors.base import Detector
from simpledet.models import build_backbone
from simpledet.models.dense_heads import RetinaHead
from simpledet.models.neck import RetinaFpnNeck
from simpledet.models.precision import PrecisionPlan

__all__ = ["RetinaNet"]


class RetinaNet(Detector):
    """Builds RetinaNet symbols from a RetinaNetConfig (see the module docstring)."""

    train_data_names = ("data", "retina_label", "retina_target", "retina_weight")
    test_data_names = ("data", "im_info")
    label_names = ()
    loss_names = ("retina_cls_loss", "retina_reg_loss")
    precision_components = ("backbone", "neck", "head")

    def __init__(self, cfg):
        super().__init__(cfg)
        self.backbone = build_backbone(cfg.backbone, 4, cfg.runtime.num_devices,
                                       cfg.runtime.device)
        self.neck = RetinaFpnNeck.from_config(cfg.neck)
        names = self.neck.rpn_feature_names
        self.feature_strides = tuple(self.neck.strides[n] for n in names)
        self.head = RetinaHead(cfg.head, cfg.anchors, cfg.test, cfg.num_classes - 1, names,
                               self.feature_strides)
        self._levels_cache = {}

    # --- graph pieces -------------------------------------------------------------------------

    def _features(self, data, plan=None):
        """The neck's maps the head reads (p3..p7); ``plan`` records backbone and neck."""
        plan = plan or PrecisionPlan()
        backbone_features = self.backbone.get_features(data)
        plan.mark("backbone", [data], list(backbone_features.values()))
        features = self.neck.get_features(backbone_features)
        plan.mark("neck", list(backbone_features.values()), list(features.values()))
        return [features[n] for n in self.neck.rpn_feature_names]

    def _head_output(self, features, plan):
        """The head's per-level logits and deltas; ``plan`` records its towers and predictor
        convs (the loss's reshapes, the sigmoid and the post-processing are not the head's)."""
        cls_logits, bbox_deltas = self.head.get_output(features)
        plan.mark("head", features, cls_logits + bbox_deltas)
        return cls_logits, bbox_deltas

    def get_train_symbol(self):
        """mx.sym.Group of the two MakeLoss outputs (see the module docstring)."""
        inputs = {name: mx.sym.var(name) for name in self.train_data_names}
        plan = PrecisionPlan.from_config(self.cfg)
        cls_logits, bbox_deltas = self._head_output(self._features(inputs["data"], plan), plan)
        loss_values = self.head.get_loss(cls_logits, bbox_deltas, inputs["retina_label"],
                                         inputs["retina_target"], inputs["retina_weight"])
        symbol = mx.sym.Group([mx.sym.MakeLoss(loss_values[name], name=name)
                               for name in self.loss_names])
        return plan.apply(symbol, self.train_data_names)

    def get_test_symbol(self):
        """The inference symbol: data, im_info -> dets (B, max_det, 6)."""
        inputs = {name: mx.sym.var(name) for name in self.test_data_names}
        plan = PrecisionPlan.from_config(self.cfg)
        cls_logits, bbox_deltas = self._head_output(self._features(inputs["data"], plan), plan)
        dets = self.head.get_prediction(cls_logits, bbox_deltas, inputs["im_info"])
        return plan.apply(dets, self.test_data_names)

    # --- what the engine needs ----------------------------------------------------------------

    def anchor_levels(self, bucket_h, bucket_w):
        """[(stride, feat_h, feat_w)] of the head's levels for a padded (bucket_h, bucket_w)
        input, by infer_shape of the class logits (the loader's targets must match them)."""
        key = (int(bucket_h), int(bucket_w))
        if key not in self._levels_cache:
            cls_logits, _ = self.head.get_output(self._features(mx.sym.var("data")))
            _, shapes, _ = mx.sym.Group(cls_logits).infer_shape(data=(1, 3) + key)
            self._levels_cache[key] = [(stride, shape[2], shape[3]) for stride, shape
                                       in zip(self.feature_strides, shapes)]
        return list(self._levels_cache[key])

    def target_assigners(self, buckets=None):
        """[RetinaAnchorAssigner] of cfg.anchors / cfg.targets on the levels of
        ``anchor_levels`` (a table of the given buckets, which pickles; all buckets through
        this detector when None)."""
        levels_fn = self.anchor_levels if buckets is None else levels_table(self.anchor_levels,
                                                                             buckets)
        return [RetinaAnchorAssigner.from_config(self.cfg.anchors, self.cfg.targets, levels_fn)]

    def fixed_param_patterns(self):
        """Anchored regexes of the parameters not to train (frozen backbone stages and, with
        fixbn, every backbone norm affine)."""
        return self.backbone.fixed_param_patterns()

    def backbone_param_patterns(self):
        """Anchored regexes of the backbone's parameter names: what a pretrained file must
        hold when ``pretrain_strict``; the neck (``fpn_``) and head (``retina_``) are
        initialized."""
        return self.backbone.param_patterns()
