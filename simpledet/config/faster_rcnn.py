"""The Faster R-CNN config schema: one section per data-flow stage, plus the run settings.

Defaults are the recipe shared by SimpleDet's ``faster_*_1x`` model zoo; the family bases
(``config/_base/faster_fpn.py``, ``config/_base/faster_c4.py``) set what differs between FPN and
C4. Builders read fields (``cfg.rpn.nms_iou``) and derived values (``cfg.lr``,
``cfg.rpn_feature_strides``, ``cfg.num_classes``); derived values are properties, so nothing
can be typed twice or contradict itself. Layouts and conventions follow the rest of the package:
boxes are "+1" [x1, y1, x2, y2], labels 1..K with 0 = background.
"""
import warnings
from typing import Literal

from simpledet.config.schema import (
    ConfigError,
    Section,
    all_positive,
    field,
    fraction,
    increasing,
    non_negative,
    positive,
)
from simpledet.core.precision import fp16_on_cpu_message

# The 80 COCO categories in category-id order: label l (1..80) is COCO_CLASS_NAMES[l - 1].
COCO_CLASS_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush",
)

# Pixel normalization expected by each variant's pretrained weights (RGB order, 0..255 input).
_CAFFE_MEAN = (122.7717, 115.9465, 102.9801)  # MSRA ResNet v1 weights: mean only
_IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)  # GluonCV v1b / ResNeXt weights
_IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)


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
    """

    variant: Literal["v1", "v1b", "v2", "resnext"] = "v1"
    depth: Literal[18, 34, 50, 101, 152] = 50
    resnext_groups: int = field(32, check=positive)
    resnext_group_width: int = field(4, check=positive)
    normalizer: Literal["fixbn", "bn", "syncbn", "gn"] = "fixbn"
    frozen_stages: int = field(1, check=non_negative)
    width: int = field(64, check=positive)

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
    def pixel_mean(self) -> tuple:
        """Per-channel RGB mean subtracted from 0..255 pixels, as the pretrained weights expect."""
        return {"v1": _CAFFE_MEAN, "v2": (0.0, 0.0, 0.0)}.get(self.variant, _IMAGENET_MEAN)

    @property
    def pixel_std(self) -> tuple:
        """Per-channel RGB std dividing the mean-subtracted pixels."""
        return _IMAGENET_STD if self.variant in ("v1b", "resnext") else (1.0, 1.0, 1.0)

    def validate(self):
        if self.frozen_stages > 5:
            raise self.error("frozen_stages", f"must be in 0..5, got {self.frozen_stages}")
        if self.variant != "resnext":
            for name, default in (("resnext_groups", 32), ("resnext_group_width", 4)):
                if getattr(self, name) != default:
                    raise self.error(name, f"only applies to variant 'resnext', got variant "
                                     f"{self.variant!r}")


class NeckConfig(Section):
    """Feature neck between backbone and heads.

    Attributes:
        type: 'fpn' (P2-P6 from c2..c5, P6 by stride-2 subsampling of P5) or 'none' (the heads
            read c4 directly: the C4 layout).
        channels: FPN output channels.
    """

    type: Literal["fpn", "none"] = "fpn"
    channels: int = field(256, check=positive)


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
        allowed_border: anchors reaching further than this outside the image are ignored.
        train_pre_nms / train_post_nms / test_pre_nms / test_post_nms: proposal counts.
        nms_iou: IoU threshold of the proposal NMS.
        min_box_size: proposals smaller than this (input pixels) are dropped; 0 keeps all.
    """

    anchor_scales: tuple[float, ...] = field((8.0,), check=all_positive)
    anchor_ratios: tuple[float, ...] = field((0.5, 1.0, 2.0), check=all_positive)
    conv_channels: int = field(256, check=positive)
    batch_per_image: int = field(256, check=positive)
    fg_fraction: float = field(0.5, check=fraction)
    pos_iou: float = field(0.7, check=fraction)
    neg_iou: float = field(0.3, check=fraction)
    min_pos_iou: float = field(0.0, check=fraction)
    allowed_border: int = field(0, check=non_negative)
    train_pre_nms: int = field(2000, check=positive)
    train_post_nms: int = field(2000, check=positive)
    test_pre_nms: int = field(1000, check=positive)
    test_post_nms: int = field(1000, check=positive)
    nms_iou: float = field(0.7, check=fraction)
    min_box_size: float = field(0.0, check=non_negative)

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
    """

    batch_per_image: int = field(512, check=positive)
    fg_fraction: float = field(0.25, check=fraction)
    fg_iou: float = field(0.5, check=fraction)
    bg_iou_hi: float = field(0.5, check=fraction)
    bg_iou_lo: float = field(0.0, check=fraction)
    add_gt_as_proposals: bool = True

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
        type: '2mlp' (two shared fc layers, for FPN) or 'c5' (the res5 stage at stride 1 plus
            global pooling, for C4, as SimpleDet's BboxC5V1Head).
        c5_stride: stride of res5's first unit in the 'c5' head: 1 keeps 7x7 RoIs at 7x7
            (SimpleDet); 2 runs res5 at 4x4, about 3x cheaper (detectron2 pools 14x14 and uses 2).
        fc_dim: width of the 2mlp fc layers.
        class_agnostic: one box regression for all classes instead of one per class.
        reg_mean / reg_std: normalization of the (dx, dy, dw, dh) regression targets.
    """

    type: Literal["2mlp", "c5"] = "2mlp"
    c5_stride: Literal[1, 2] = 1
    fc_dim: int = field(1024, check=positive)
    class_agnostic: bool = False
    reg_mean: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    reg_std: tuple[float, float, float, float] = field((0.1, 0.1, 0.2, 0.2),
                                                       check=all_positive)


class DatasetConfig(Section):
    """Where the COCO-format data lives and which classes it has.

    Paths are relative to the working directory (the repository root) unless absolute. By
    default ``{root}/annotations/instances_{split}.json`` and ``{root}/images/{split}``;
    explicit ``*_ann_file`` / ``*_image_dir`` replace them.

    Attributes:
        root: dataset folder.
        train_split / val_split: split names, e.g. 'train2017', 'val2017'.
        train_ann_file / train_image_dir / val_ann_file / val_image_dir: explicit paths, or
            None for the default layout.
        class_names: the K foreground classes in label order (label l is class_names[l - 1]);
            the loader checks them against the annotation file's categories.
        synthetic: a bundled dataset instead of files under root, built on first use
            (detection_train.py / detection_test.py) into a cache folder named after its
            parameters; its splits are 'train' and 'val'. 'shapes': synthetic coloured shapes
            (simpledet.data.shapes); 'photos': 8 hand-annotated photographs, the same in both
            splits (simpledet.data.photos; class names photos.CLASS_NAMES).
        synthetic_train / synthetic_val / synthetic_seed: the shapes dataset's parameters
            (the photos dataset has none: leave them at their defaults).
    """

    root: str = "data/coco"
    train_split: str = "train2017"
    val_split: str = "val2017"
    train_ann_file: str | None = None
    train_image_dir: str | None = None
    val_ann_file: str | None = None
    val_image_dir: str | None = None
    class_names: tuple[str, ...] = COCO_CLASS_NAMES
    synthetic: Literal["none", "shapes", "photos"] = "none"
    synthetic_train: int = field(1000, check=positive)
    synthetic_val: int = field(200, check=positive)
    synthetic_seed: int = 0

    @property
    def num_classes(self) -> int:
        """Classes including background: len(class_names) + 1."""
        return len(self.class_names) + 1

    @property
    def synthetic_params(self) -> dict | None:
        """Parameters of the generated dataset (None for files under root)."""
        if self.synthetic == "none":
            return None
        if self.synthetic == "photos":
            from simpledet.data.photos import photos_params

            return photos_params()
        from simpledet.data.shapes import DEFAULT_SIZE, shapes_params

        return shapes_params(self.synthetic_train, self.synthetic_val, self.synthetic_seed,
                             DEFAULT_SIZE, "jpg")

    def _layout(self):
        """(folder, train split, val split): root, or the synthetic dataset's cache folder."""
        if self.synthetic == "none":
            return self.root, self.train_split, self.val_split
        if self.synthetic == "photos":
            from simpledet.data.photos import photos_root

            return photos_root(self.synthetic_params), "train", "val"
        from simpledet.data.shapes import shapes_root

        return shapes_root(self.synthetic_params), "train", "val"

    @property
    def train_annotations(self) -> str:
        """The training annotation json."""
        root, split, _ = self._layout()
        return self.train_ann_file or f"{root}/annotations/instances_{split}.json"

    @property
    def train_images(self) -> str:
        """The training image folder."""
        root, split, _ = self._layout()
        return self.train_image_dir or f"{root}/images/{split}"

    @property
    def val_annotations(self) -> str:
        """The validation annotation json."""
        root, _, split = self._layout()
        return self.val_ann_file or f"{root}/annotations/instances_{split}.json"

    @property
    def val_images(self) -> str:
        """The validation image folder."""
        root, _, split = self._layout()
        return self.val_image_dir or f"{root}/images/{split}"

    def validate(self):
        if not self.class_names:
            raise self.error("class_names", "must name at least one class")
        duplicates = sorted({n for n in self.class_names if self.class_names.count(n) > 1})
        if duplicates:
            raise self.error("class_names", f"has duplicates: {duplicates}")
        if self.synthetic == "photos":
            for name in ("synthetic_train", "synthetic_val", "synthetic_seed"):
                if getattr(self, name) != self._fields[name].default:
                    raise self.error(name, "only applies to synthetic 'shapes'; the 'photos' "
                                     "dataset has fixed content")


class InputConfig(Section):
    """Image preprocessing and loading. Pixel mean/std follow the backbone's pretrained weights
    (``cfg.backbone.pixel_mean``); images are padded to the static (short, long) buckets.

    Attributes:
        short: the shorter side is resized to this ...
        long: ... unless the longer side would exceed this.
        flip: random horizontal flip in training (probability 0.5).
        max_num_gt: ground-truth boxes padded/capped per image in a batch.
        loader_workers: data loading processes.
        skip_bad_images: a missing or corrupt image is skipped and counted (its batch slot is
            filled by another image of the batch, flagged invalid) instead of stopping the run
            with an error naming the file.
    """

    short: int = field(800, check=positive)
    long: int = field(1333, check=positive)
    flip: bool = True
    max_num_gt: int = field(100, check=positive)
    loader_workers: int = field(4, check=non_negative)
    skip_bad_images: bool = False

    def validate(self):
        if self.long < self.short:
            raise self.error("long", f"({self.long}) must be >= input.short ({self.short})")


class RuntimeConfig(Section):
    """Where it runs: device contexts and gradient aggregation.

    Attributes:
        device: 'gpu' -> [mx.gpu(i) for i in device_ids], 'cpu' -> [mx.cpu(i) ...] (the same
            multi-context code path, testable without a GPU).
        device_ids: context indices on this machine.
        num_machines: machines in a distributed run (dist kvstores); scales the total batch.
        kvstore: MXNet kvstore type ('device'/'nccl' on one machine, 'dist_*' across machines).
    """

    device: Literal["gpu", "cpu"] = "gpu"
    device_ids: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
    num_machines: int = field(1, check=positive)
    kvstore: Literal["local", "device", "nccl", "dist_sync", "dist_device_sync",
                     "horovod"] = "device"

    @property
    def num_devices(self) -> int:
        """Contexts per machine: len(device_ids)."""
        return len(self.device_ids)

    def validate(self):
        if not self.device_ids:
            raise self.error("device_ids", "must list at least one device")
        if len(set(self.device_ids)) != len(self.device_ids):
            raise self.error("device_ids", f"has duplicates: {self.device_ids}")
        if self.num_machines > 1 and not self.kvstore.startswith(("dist", "horovod")):
            raise self.error("kvstore", f"must be a dist_* kvstore or 'horovod' for "
                             f"num_machines={self.num_machines}, got {self.kvstore!r}")


class TrainConfig(Section):
    """Optimizer and schedule. Schedule lengths are given for a total batch of 16 images and
    rescaled to the actual total batch (``cfg.max_iter``, ``cfg.lr_steps``), as is the lr
    (``cfg.lr``), so a config trains the same number of epochs on any number of devices.

    Attributes:
        images_per_device: images per context per iteration.
        lr_per_16_images: SGD learning rate at a total batch of 16 (linear scaling rule).
        momentum / weight_decay: SGD settings.
        clip_gradient: clip each gradient element to [-c, c] (the optimizer's clip: it stops
            overflow, not a divergence); None disables.
        clip_grad_norm: scale the update down when the global L2 norm of the batch-mean
            gradient exceeds this (mmdetection's grad_clip max_norm; keeps the direction);
            None disables.
        iters_at_batch16: training length at batch 16 (1x = 90k iterations = 12 COCO epochs).
        lr_steps_at_batch16: iterations (at batch 16) where the lr is multiplied by lr_decay.
        lr_decay: the step factor.
        lr_policy: 'step' (multiply by lr_decay at each lr step) or 'cosine' (a cosine curve
            from the base rate to 0 at the last iteration; lr steps are then unused).
        warmup_iters: linear warmup length in actual iterations (not rescaled, as SimpleDet's
            FPN configs); 0 disables.
        warmup_factor: the warmup starts at warmup_factor * lr.
        log_interval / checkpoint_interval: in iterations.
        tensorboard: also write the logged scalars as TensorBoard event files
            (``<experiment_dir>/tensorboard``; needs tensorboardX, in the 'test' extra).
        stop_when_dead: stop a run whose network died (most weights get exactly zero
            gradient for several log intervals: engine/health.py); False only logs an error.
    """

    images_per_device: int = field(2, check=positive)
    lr_per_16_images: float = field(0.02, check=positive)
    momentum: float = field(0.9, check=fraction)
    weight_decay: float = field(1e-4, check=non_negative)
    clip_gradient: float | None = field(None, check=positive)
    clip_grad_norm: float | None = field(None, check=positive)
    iters_at_batch16: int = field(90000, check=positive)
    lr_steps_at_batch16: tuple[int, ...] = field((60000, 80000), check=increasing)
    lr_decay: float = field(0.1, check=positive)
    lr_policy: Literal["step", "cosine"] = "step"
    warmup_iters: int = field(500, check=non_negative)
    warmup_factor: float = field(1.0 / 3.0, check=fraction)
    log_interval: int = field(20, check=positive)
    checkpoint_interval: int = field(10000, check=positive)
    tensorboard: bool = True
    stop_when_dead: bool = True

    def validate(self):
        late = [s for s in self.lr_steps_at_batch16 if s >= self.iters_at_batch16]
        if late:
            raise self.error("lr_steps_at_batch16", f"has steps {late} at or after "
                             f"train.iters_at_batch16 ({self.iters_at_batch16})")


class TestConfig(Section):
    """Inference and post-processing.

    Attributes:
        images_per_device: images per context per forward pass.
        score_thresh: detections scoring below this are dropped before NMS.
        nms_iou: IoU threshold of the per-class NMS.
        max_det: detections kept per image.
    """

    __test__ = False  # not a pytest test class despite the name

    images_per_device: int = field(1, check=positive)
    score_thresh: float = field(0.05, check=fraction)
    nms_iou: float = field(0.5, check=fraction)
    max_det: int = field(100, check=positive)


LOW_PRECISION_COMPONENTS = ("backbone", "neck", "rpn_head", "bbox_head")


class MixedPrecisionConfig(Section):
    """How ``precision`` 'fp16' / 'bf16' runs (ignored for 'fp32').

    The listed components compute in the low precision (their convolutions and fc layers, and
    whatever MXNet's AMP op lists allow to follow them); everything else stays float32: the
    losses, sigmoid/softmax, proposal generation and sampling, RoIAlign (its inputs are cast
    back to float32), box decoding and NMS. Parameters stay float32 (master weights) and are
    cast inside the graph. fp16 gradients are protected by dynamic loss scaling; bf16 has
    float32's exponent range and needs none.

    Attributes:
        components: the components that run in low precision.
        initial_loss_scale: fp16: the loss scale of the first iteration (a power of two).
        growth_interval: fp16: the scale doubles after this many consecutive finite steps.
        min_loss_scale: fp16: an overflow at this scale stops training (the gradients are
            not finite at any scale: the run diverged).
    """

    components: tuple[Literal["backbone", "neck", "rpn_head", "bbox_head"], ...] = (
        LOW_PRECISION_COMPONENTS)
    initial_loss_scale: float = field(2.0 ** 16, check=positive)
    growth_interval: int = field(2000, check=positive)
    min_loss_scale: float = field(1.0, check=positive)

    def validate(self):
        if len(set(self.components)) != len(self.components):
            raise self.error("components", f"has duplicates: {self.components}")
        if self.min_loss_scale > self.initial_loss_scale:
            raise self.error("min_loss_scale", f"({self.min_loss_scale}) must be <= "
                             f"mixed_precision.initial_loss_scale ({self.initial_loss_scale})")


class FasterRcnnConfig(Section):
    """A complete Faster R-CNN experiment.

    Attributes:
        name: experiment name; the loader sets it to the config file's stem when left None.
        output_root: experiments are written to {output_root}/{name}.
        seed: random seed of parameter init, sampling and data order.
        pretrain: 'auto' (pretrain_model/{backbone arch_name}-0000.params), a path to a
            .params file, or None / 'none' to train from scratch.
        pretrain_strict: the pretrained file must hold every backbone parameter with the
            model's shape, else training stops with an error naming them (head parameters are
            expected to be missing); False allows a partial load: what is missing or does not
            fit is initialized and reported in the log (see simpledet.engine.pretrained).
        precision: 'fp32', or mixed precision 'fp16' (GPU only, dynamic loss scaling) /
            'bf16' (CPU through MKLDNN, or GPU); master weights stay fp32. See
            ``mixed_precision`` for what runs in low precision.
    """

    name: str | None = None
    output_root: str = "experiments"
    seed: int = 0
    pretrain: str | None = "auto"
    pretrain_strict: bool = True
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    mixed_precision: MixedPrecisionConfig
    backbone: BackboneConfig
    neck: NeckConfig
    rpn: RpnConfig
    roi_sampler: RoiSamplerConfig
    roi_extractor: RoiExtractorConfig
    bbox_head: BboxHeadConfig
    dataset: DatasetConfig
    input: InputConfig
    runtime: RuntimeConfig
    train: TrainConfig
    test: TestConfig

    @property
    def num_classes(self) -> int:
        """Classes including background, from dataset.class_names."""
        return self.dataset.num_classes

    @property
    def total_batch(self) -> int:
        """Images per iteration: train.images_per_device * devices * machines."""
        return (self.train.images_per_device * self.runtime.num_devices
                * self.runtime.num_machines)

    @property
    def lr(self) -> float:
        """Learning rate: train.lr_per_16_images * total_batch / 16."""
        return self.train.lr_per_16_images * self.total_batch / 16

    @property
    def warmup_lr(self) -> float:
        """Learning rate at the first warmup iteration: lr * train.warmup_factor."""
        return self.lr * self.train.warmup_factor

    @property
    def max_iter(self) -> int:
        """Training iterations at the actual batch: iters_at_batch16 * 16 // total_batch."""
        return _rescale(self.train.iters_at_batch16, self.total_batch)

    @property
    def lr_steps(self) -> tuple:
        """Lr step iterations at the actual batch: lr_steps_at_batch16 * 16 // total_batch."""
        return tuple(_rescale(s, self.total_batch) for s in self.train.lr_steps_at_batch16)

    @property
    def rpn_feature_strides(self) -> tuple:
        """Strides of the feature maps the RPN runs on: P2-P6 for FPN, C4 otherwise."""
        return (4, 8, 16, 32, 64) if self.neck.type == "fpn" else (16,)

    @property
    def roi_feature_strides(self) -> tuple:
        """Strides of the feature maps RoIAlign reads: P2-P5 for FPN, C4 otherwise."""
        return (4, 8, 16, 32) if self.neck.type == "fpn" else (16,)

    @property
    def pretrain_path(self) -> str | None:
        """The .params file to initialize from, or None to train from scratch."""
        if self.pretrain == "auto":
            return f"pretrain_model/{self.backbone.arch_name}-0000.params"
        return self.pretrain

    @property
    def experiment_dir(self) -> str:
        """Folder of checkpoints, logs and the resolved config: {output_root}/{name}."""
        return f"{self.output_root}/{self.name or 'unnamed'}"

    def validate(self):
        layouts = {"fpn": "2mlp", "none": "c5"}
        if self.bbox_head.type != layouts[self.neck.type]:
            raise ConfigError(
                f"'bbox_head.type' is {self.bbox_head.type!r} but neck.type "
                f"{self.neck.type!r} needs {layouts[self.neck.type]!r}", key="bbox_head.type",
                suggestion="FPN uses the 2mlp head; the C4 layout (neck 'none') the c5 head")
        if self.pretrain_path is None and self.backbone.normalizer == "fixbn":
            # A warning, not an error: smoke tests train zoo configs from scratch on purpose.
            warnings.warn("backbone.normalizer is 'fixbn' but pretrain is none: frozen "
                          "BatchNorm keeps its initial statistics (identity); consider "
                          "backbone.normalizer='bn', 'syncbn' or 'gn'", stacklevel=2)
        if self.precision != "fp32" and not self.mixed_precision.components:
            raise ConfigError(
                f"'mixed_precision.components' is empty but precision is {self.precision!r}",
                key="mixed_precision.components",
                suggestion="list components, e.g. ('backbone', 'neck'), or set precision=fp32")
        if self.precision == "fp16" and self.runtime.device == "cpu":
            raise ConfigError(fp16_on_cpu_message(f"runtime.device='cpu' (device_ids "
                                                  f"{self.runtime.device_ids})"),
                              key="precision")
        if self.max_iter <= self.train.warmup_iters:
            raise ConfigError(
                f"'train.warmup_iters' ({self.train.warmup_iters}) must be below max_iter "
                f"({self.max_iter} at total batch {self.total_batch})", key="train.warmup_iters")


def _rescale(iters_at_16, total_batch):
    return max(1, iters_at_16 * 16 // total_batch)
