"""The Faster R-CNN config schema: its model sections (backbone, neck, RPN, RoI sampling, RoI
extraction, box head) on the run settings every family shares (``simpledet.config.common``).

Defaults are the recipe shared by SimpleDet's ``faster_*_1x`` model zoo; the family bases
(``config/_base/faster_fpn.py``, ``config/_base/faster_c4.py``) set what differs between FPN and
C4. Builders read fields (``cfg.rpn.nms_iou``) and derived values (``cfg.lr``,
``cfg.rpn_feature_strides``, ``cfg.num_classes``); derived values are properties, so nothing
can be typed twice or contradict itself. Layouts and conventions follow the rest of the package:
boxes are "+1" [x1, y1, x2, y2], labels 1..K with 0 = background.

The three layouts (FPN, C4, and C5-reduce: RPN on c4, light box heads on a channel-reduced
dilated c5) are decided here only, in :data:`LAYOUTS`, keyed by ``neck.type``.
"""
import warnings
from dataclasses import dataclass
from typing import Literal

from simpledet.config.common import (  # noqa: F401  (re-exported: configs import them here)
    COCO_CLASS_NAMES,
    DatasetConfig,
    DetectorConfig,
    InputConfig,
    MixedPrecisionConfig,
    RuntimeConfig,
    TestConfig,
    TrainConfig,
)
from simpledet.config.schema import (
    Check,
    ConfigError,
    Section,
    all_positive,
    field,
    fraction,
    non_negative,
    positive,
)
from simpledet.detectors.faster_rcnn import FasterRcnn

_CAFFE_MEAN = (122.7717, 115.9465, 102.9801)  # MSRA ResNet v1 weights: mean only
_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)  # GluonCV v1b / ResNeXt weights
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)
_GN_GROUPS = 32  # simpledet.models.layers.normalizer's GroupNorm groups


class BackboneConfig(Section):
    """The ResNet family backbone; it outputs c2..c5 at strides 4, 8, 16, 32.

    Attributes:
        variant: 'v1' (MSRA ResNet, stride in the first 1x1 conv), 'v1b' (stride in the 3x3
            conv, GluonCV weights), 'v2' (pre-activation, MXNet model-zoo weights, normalizes
            inside the net), 'resnext' (grouped 3x3 convs, v1b layout).
        depth: number of layers.
        resnext_groups: ResNeXt cardinality (the 32 of 32x4d); only for variant 'resnext'.
        resnext_group_width: channels per group in the first stage (the 4 of 32x4d).
        normalizer: 'fixbn' (BatchNorm with frozen statistics and affine: needs pretrained
            weights), 'bn' (per-device BatchNorm), 'syncbn' (cross-device), 'gn' (GroupNorm).
        frozen_stages: leading stages whose weights are not trained: 0 trains everything,
            1 = stem + res2 (SimpleDet's fixed_param ["conv0", "stage1"]), up to 5. With 'bn' or
            'syncbn' the frozen stages' BatchNorms use their stored statistics (frozen BN).
        width: stem channels and res2 width of basic units; every stage scales with it. 64 in
            all published ResNets (pretrained weights need it); smaller values make cheap
            from-scratch models such as the CPU quickstart's.
        pixel_stats: the input normalization the pretrained weights expect: 'auto' (the
            variant's: v1 'caffe', v1b / resnext 'imagenet', v2 'raw'), 'caffe' (MSRA mean
            only), 'imagenet' (ImageNet mean and std) or 'raw' (0..255 pixels). Weights of
            another toolbox may need another one than their variant's (GluonCV resnet*_v1 is
            variant v1 with 'imagenet'; scripts/convert_weights.py prints the setting).
        dcn_stages: stages by res number (2..5) whose units' 3x3 conv is deformable
            (SimpleDet's DCN configs: (3, 4, 5) or (4, 5)); () for none. In the C4 layout res5
            runs in the box head and is deformable there too; in the C5-reduce layout its
            deformable convs are dilated as the plain ones. Offset convs start at zero.
        dcn_version: 1 (DCN, ``contrib.DeformableConvolution``) or 2 (DCNv2, modulated,
            ``contrib.ModulatedDeformableConvolution``); only with dcn_stages.
        dcn_groups: deformable groups (channel groups sharing one offset field); only with
            dcn_stages.
    """

    variant: Literal["v1", "v1b", "v2", "resnext"] = "v1"
    depth: Literal[18, 34, 50, 101, 152] = 50
    resnext_groups: int = field(32, check=positive)
    resnext_group_width: int = field(4, check=positive)
    normalizer: Literal["fixbn", "bn", "syncbn", "gn"] = "fixbn"
    frozen_stages: int = field(1, check=non_negative)
    width: int = field(64, check=positive)
    pixel_stats: Literal["auto", "caffe", "imagenet", "raw"] = "auto"
    dcn_stages: tuple[int, ...] = ()
    dcn_version: Literal[1, 2] = 2
    dcn_groups: int = field(1, check=positive)

    @property
    def arch_name(self) -> str:
        """Name of the architecture and of its pretrained weights, e.g. 'resnet-v1-50'."""
        if self.variant == "v1":
            return f"resnet-v1-{self.depth}"
        if self.variant == "v1b":
            return f"resnet{self.depth}_v1b"
        if self.variant == "v2":
            return f"resnet-{self.depth}"
        return f"resnext-{self.depth}-{self.resnext_groups}x{self.resnext_group_width}d"

    @property
    def _pixel_stats(self) -> str:
        if self.pixel_stats != "auto":
            return self.pixel_stats
        return {"v1": "caffe", "v2": "raw"}.get(self.variant, "imagenet")

    @property
    def pixel_mean(self) -> tuple:
        """Per-channel RGB mean subtracted from 0..255 pixels, as the pretrained weights expect."""
        return {"caffe": _CAFFE_MEAN, "raw": (0.0, 0.0, 0.0)}.get(self._pixel_stats,
                                                                  _IMAGENET_MEAN)

    @property
    def pixel_std(self) -> tuple:
        """Per-channel RGB std dividing the mean-subtracted pixels."""
        return _IMAGENET_STD if self._pixel_stats == "imagenet" else (1.0, 1.0, 1.0)

    def validate(self):
        if self.frozen_stages > 5:
            raise self.error("frozen_stages", f"must be in 0..5, got {self.frozen_stages}")
        if self.variant != "resnext":
            for name, default in (("resnext_groups", 32), ("resnext_group_width", 4)):
                if getattr(self, name) != default:
                    raise self.error(name, f"only applies to variant 'resnext', got variant "
                                     f"{self.variant!r}")
        self._validate_dcn()

    def _validate_dcn(self):
        stages = self.dcn_stages
        if not stages:
            for name, default in (("dcn_version", 2), ("dcn_groups", 1)):
                if getattr(self, name) != default:
                    raise self.error(name, "only applies with backbone.dcn_stages (e.g. "
                                     "(3, 4, 5)), which is empty")
            return
        if not set(stages) <= {2, 3, 4, 5} or len(set(stages)) != len(stages):
            raise self.error("dcn_stages", f"must be distinct res numbers in 2..5 (res2..res5), "
                             f"got {stages}")
        frozen = [s for s in stages if s <= self.frozen_stages + 1]
        if frozen:
            raise self.error("dcn_stages", f"res{frozen[0]} is frozen (frozen_stages "
                             f"{self.frozen_stages} freezes res2..res{self.frozen_stages + 1}): "
                             f"its zero offsets would never train")


class NeckConfig(Section):
    """Feature neck between backbone and heads.

    Attributes:
        type: 'fpn' (P2-P6 from c2..c5, P6 by stride-2 subsampling of P5), 'none' (the heads
            read c4 directly: the C4 layout) or 'c5_reduce' (res5 runs once on the image at
            stride 1, dilated, so c5 stays at stride 16; the RPN reads c4, RoIAlign a 1x1 conv +
            ReLU of c5 down to ``channels``, and 2MLP box heads follow: SimpleDet's ``*_c5_red``
            configs, see simpledet.models.neck.c5_reduce).
        channels: FPN output channels; for 'c5_reduce' the channels of the reduced c5.
        normalizer: normalization after each FPN lateral and output conv (detectron2's FPN
            ``norm``): 'none' (plain convs with bias, SimpleDet's FPN), 'gn' (GroupNorm, 32
            groups), 'bn' or 'syncbn'; only for type 'fpn'.
    """

    type: Literal["fpn", "none", "c5_reduce"] = "fpn"
    channels: int = field(256, check=positive)
    normalizer: Literal["none", "gn", "bn", "syncbn"] = "none"

    def validate(self):
        if self.normalizer != "none" and self.type != "fpn":
            raise self.error("normalizer", f"only applies to type 'fpn', got type "
                             f"{self.type!r}")
        if self.normalizer == "gn" and self.channels % _GN_GROUPS:
            raise self.error("channels", f"({self.channels}) must be divisible by GroupNorm's "
                             f"{_GN_GROUPS} groups (neck.normalizer 'gn')")


class RpnConfig(Section):
    """Region proposal network: anchors, head, anchor targets and proposal generation.

    Anchor strides are not fields: they follow from the neck (``cfg.rpn_feature_strides``).
    Proposal counts: ``*_pre_nms`` is per pyramid level and image (top-k by score before the
    joint NMS), ``*_post_nms`` per image.

    Attributes:
        anchor_scales: anchor sizes in units of the stride (8 at stride 4 = 32 px).
        anchor_ratios: anchor height / width ratios.
        conv_channels: channels of the shared 3x3 conv of the head.
        batch_per_image: anchors sampled per image for the loss.
        fg_fraction: at most this fraction of the sampled anchors is positive.
        pos_iou: anchors with IoU >= pos_iou with a box are positive.
        neg_iou: anchors with max IoU < neg_iou are negative.
        min_pos_iou: each box's best anchors (ties included) are also positive if their IoU is
            > 0 and >= this (0: always, as py-faster-rcnn and detectron2).
        allowed_border: anchors reaching further than this outside the image are ignored
            (py-faster-rcnn and SimpleDet: 0); -1 keeps them all (detectron2, mmdetection).
        train_pre_nms / train_post_nms / test_pre_nms / test_post_nms: proposal counts.
        nms_iou: IoU threshold of the proposal NMS.
        min_box_size: proposals smaller than this (input pixels) are dropped; 0 keeps all.
        reg_beta: smooth L1 transition of the anchor regression loss (SimpleDet's sigma 3 =
            1/9; 0: L1, detectron2's RPN default).
        reg_loss_weight: multiplies the anchor regression loss (the logged value is weighted).
    """

    anchor_scales: tuple[float, ...] = field((8.0,), check=all_positive)
    anchor_ratios: tuple[float, ...] = field((0.5, 1.0, 2.0), check=all_positive)
    conv_channels: int = field(256, check=positive)
    batch_per_image: int = field(256, check=positive)
    fg_fraction: float = field(0.5, check=fraction)
    pos_iou: float = field(0.7, check=fraction)
    neg_iou: float = field(0.3, check=fraction)
    min_pos_iou: float = field(0.0, check=fraction)
    allowed_border: int = field(0, check=Check(lambda v: v >= -1, "must be >= 0, or -1 (keep "
                                                   "the anchors that cross the image)"))
    train_pre_nms: int = field(2000, check=positive)
    train_post_nms: int = field(2000, check=positive)
    test_pre_nms: int = field(1000, check=positive)
    test_post_nms: int = field(1000, check=positive)
    nms_iou: float = field(0.7, check=fraction)
    min_box_size: float = field(0.0, check=non_negative)
    reg_beta: float = field(1.0 / 9.0, check=non_negative)
    reg_loss_weight: float = field(1.0, check=positive)

    @property
    def num_anchors(self) -> int:
        """Anchors per feature location: len(anchor_scales) * len(anchor_ratios)."""
        return len(self.anchor_scales) * len(self.anchor_ratios)

    def validate(self):
        if self.neg_iou > self.pos_iou:
            raise self.error("neg_iou", f"({self.neg_iou}) must be <= rpn.pos_iou "
                             f"({self.pos_iou})")


class RoiSamplerConfig(Section):
    """Sampling of proposals into training RoIs for the box head (proposal_target).

    Attributes:
        batch_per_image: RoIs sampled per image.
        fg_fraction: at most this fraction of them is foreground.
        fg_iou: proposals with IoU >= fg_iou with a box are foreground.
        bg_iou_hi / bg_iou_lo: proposals with max IoU in [lo, hi) are background.
        add_gt_as_proposals: append the ground-truth boxes to the proposals before sampling
            (SimpleDet's ``proposal_wo_gt = False``).
        crowd_iof: a proposal that would be background is ignored (neither background nor
            foreground) when a crowd (iscrowd) region of its image covers more than this
            fraction of its area (intersection over the proposal's area; Detectron's
            crowd_thresh 0.7). The regions enter the train graph as ``gt_crowd`` (B,
            input.max_num_crowd, 4). 0 or None: off, no crowd input (proposals on crowd
            regions are background, as SimpleDet).
    """

    batch_per_image: int = field(512, check=positive)
    fg_fraction: float = field(0.25, check=fraction)
    fg_iou: float = field(0.5, check=fraction)
    bg_iou_hi: float = field(0.5, check=fraction)
    bg_iou_lo: float = field(0.0, check=fraction)
    add_gt_as_proposals: bool = True
    crowd_iof: float | None = field(0.7, check=fraction)

    def validate(self):
        if self.bg_iou_lo > self.bg_iou_hi:
            raise self.error("bg_iou_lo", f"({self.bg_iou_lo}) must be <= "
                             f"roi_sampler.bg_iou_hi ({self.bg_iou_hi})")


class RoiExtractorConfig(Section):
    """RoIAlign of the sampled RoIs (FPN: level by box size, see fpn_roi_align).

    Attributes:
        pooled_size: output height = width of each RoI feature.
        sampling_ratio: bilinear samples per output bin and axis.
        aligned: use the half-pixel offset of detectron2's ROIAlignV2 (SimpleDet: False).
        canonical_scale / canonical_level: a box of sqrt(area) = canonical_scale goes to this
            pyramid level (FPN paper eq. 1); unused by the C4 layout.
    """

    pooled_size: int = field(7, check=positive)
    sampling_ratio: int = field(2, check=positive)
    aligned: bool = False
    canonical_scale: float = field(224.0, check=positive)
    canonical_level: int = field(4, check=positive)


class BboxHeadConfig(Section):
    """Box classification and regression head.

    Attributes:
        type: '2mlp' (two shared fc layers, for FPN), '4conv1fc' (four 3x3 convs of
            conv_channels, each followed by ``normalizer``, then one fc of fc_dim: detectron2's
            GN box head, for FPN) or 'c5' (the res5 stage at stride 1 plus global pooling, for
            C4, as SimpleDet's BboxC5V1Head).
        c5_stride: stride of res5's first unit in the 'c5' head: 1 keeps 7x7 RoIs at 7x7
            (SimpleDet); 2 runs res5 at 4x4, about 3x cheaper (detectron2 pools 14x14 and uses 2).
        fc_dim: width of the 2mlp fc layers (of the 4conv1fc fc layer).
        conv_channels: channels of the 4conv1fc convs.
        normalizer: normalization after each 4conv1fc conv: 'gn' (GroupNorm, 32 groups: the
            convs then have no bias) or 'none'; only for type '4conv1fc'.
        class_agnostic: one box regression for all classes instead of one per class.
        reg_mean / reg_std: normalization of the (dx, dy, dw, dh) regression targets.
    """

    type: Literal["2mlp", "4conv1fc", "c5"] = "2mlp"
    c5_stride: Literal[1, 2] = 1
    fc_dim: int = field(1024, check=positive)
    conv_channels: int = field(256, check=positive)
    normalizer: Literal["none", "gn"] = "none"
    class_agnostic: bool = False
    reg_mean: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    reg_std: tuple[float, float, float, float] = field((0.1, 0.1, 0.2, 0.2),
                                                       check=all_positive)

    def validate(self):
        if self.normalizer != "none" and self.type != "4conv1fc":
            raise self.error("normalizer", f"only applies to type '4conv1fc' (the convs it "
                             f"normalizes), got type {self.type!r}")
        if self.normalizer == "gn" and self.conv_channels % _GN_GROUPS:
            raise self.error("conv_channels", f"({self.conv_channels}) must be divisible by "
                             f"GroupNorm's {_GN_GROUPS} groups (bbox_head.normalizer 'gn')")


@dataclass(frozen=True)
class FasterLayout:
    """What ``neck.type`` decides for Faster R-CNN (the only place it is decided).

    Attributes:
        backbone_last_stage: the last ResNet stage the backbone builds (4: c2..c5 for FPN and
            C5-reduce; 3: c2..c4 for C4, whose res5 runs in the box head).
        rpn_feature_strides: strides of the maps the RPN runs on (P2-P6, or C4).
        roi_feature_strides: strides of the maps RoIAlign reads (P2-P5, C4, or reduced C5).
        bbox_head: the box head type the layout uses by default.
        other_bbox_heads: the other box head types it accepts.
        res5_dilation: 1 (res5 at stride 2, as the classifier) or 2 (res5 at stride 1 with
            dilated 3x3 convs: c5 at stride 16, detectron2's "DC5").
    """

    backbone_last_stage: int
    rpn_feature_strides: tuple
    roi_feature_strides: tuple
    bbox_head: str
    other_bbox_heads: tuple = ()
    res5_dilation: int = 1


LAYOUTS = {
    "fpn": FasterLayout(4, (4, 8, 16, 32, 64), (4, 8, 16, 32), "2mlp", ("4conv1fc",)),
    "none": FasterLayout(3, (16,), (16,), "c5"),
    # SimpleDet's *_c5_red: RPN on c4, RoIAlign on the reduced dilated c5, 2MLP heads.
    "c5_reduce": FasterLayout(4, (16,), (16,), "2mlp", res5_dilation=2),
}

# The components FasterRcnn marks for mixed precision (simpledet.models.precision.PrecisionPlan).
LOW_PRECISION_COMPONENTS = FasterRcnn.precision_components


class RpnStageConfig(DetectorConfig):
    """The model up to the RPN: backbone, neck and RPN sections and their derived values.

    The base of the RPN-only family (``simpledet.config.rpn.RpnConfig``) and of Faster R-CNN
    (:class:`FasterRcnnConfig`), so both read ``layout()``, ``rpn_feature_strides`` and the
    pretrained file from one definition. Not a family itself (it names no detector).

    ``pretrain='auto'`` stands for ``pretrain_model/{backbone.arch_name}-0000.params``.
    """

    backbone: BackboneConfig
    neck: NeckConfig
    rpn: RpnConfig

    def layout(self) -> FasterLayout:
        """The FPN, C4 or C5-reduce layout of ``neck.type`` (see :data:`LAYOUTS`)."""
        return LAYOUTS[self.neck.type]

    def auto_pretrain_path(self) -> str:
        """pretrain_model/{backbone arch_name}-0000.params."""
        return f"pretrain_model/{self.backbone.arch_name}-0000.params"

    @property
    def rpn_feature_strides(self) -> tuple:
        """Strides of the feature maps the RPN runs on: P2-P6 for FPN, C4 otherwise."""
        return self.layout().rpn_feature_strides

    def validate(self):
        if self.pretrain_path is None and self.backbone.normalizer == "fixbn":
            # A warning, not an error: smoke tests train zoo configs from scratch on purpose.
            warnings.warn("backbone.normalizer is 'fixbn' but pretrain is none: frozen "
                          "BatchNorm keeps its initial statistics (identity); consider "
                          "backbone.normalizer='bn', 'syncbn' or 'gn'", stacklevel=2)
        super().validate()


class FasterRcnnConfig(RpnStageConfig):
    """A complete Faster R-CNN experiment: the run settings (see DetectorConfig), the model up
    to the RPN (see RpnStageConfig) and the RoI stage.

    ``pretrain='auto'`` stands for ``pretrain_model/{backbone.arch_name}-0000.params``.
    """

    detector_class = FasterRcnn
    precision_components = LOW_PRECISION_COMPONENTS

    roi_sampler: RoiSamplerConfig
    roi_extractor: RoiExtractorConfig
    bbox_head: BboxHeadConfig

    @property
    def roi_feature_strides(self) -> tuple:
        """Strides of the feature maps RoIAlign reads: P2-P5 for FPN, C4 for C4, the reduced
        C5 (stride 16) for C5-reduce."""
        return self.layout().roi_feature_strides

    def validate(self):
        layout = self.layout()
        if self.bbox_head.type not in (layout.bbox_head,) + layout.other_bbox_heads:
            needed = " or ".join(repr(t) for t in (layout.bbox_head,) + layout.other_bbox_heads)
            raise ConfigError(
                f"'bbox_head.type' is {self.bbox_head.type!r} but neck.type "
                f"{self.neck.type!r} needs {needed}", key="bbox_head.type",
                suggestion="FPN uses the 2mlp (or 4conv1fc) head; the C4 layout (neck 'none') "
                           "the c5 head; the C5-reduce layout the 2mlp head")
        super().validate()
