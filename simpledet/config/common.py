"""The settings every detector family shares: data, input, schedule, test, runtime, precision.

:class:`DetectorConfig` is the base of each family's schema (``faster_rcnn.FasterRcnnConfig``,
...): it holds the run-level fields and sections and the run-level derived values (``cfg.lr``,
``cfg.max_iter``, ``cfg.total_batch``, ``cfg.num_classes``, ``cfg.experiment_dir``, ...). A
family adds its model sections and names, as class attributes, its detector class
(``detector_class``: what ``simpledet.engine.build.build_detector`` builds) and the components
mixed precision can run in low precision (``precision_components``).
"""
from typing import Any, ClassVar, Literal

from simpledet.config.schema import (
    ConfigError,
    Section,
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


class DatasetConfig(Section):
    """Where the COCO-format data lives and which classes it has.

    Paths are relative to the working directory (the repository root) unless absolute. By
    default ``{root}/annotations/instances_{split}.json`` and ``{root}/images/{split}``;
    explicit ``*_ann_file`` / ``*_image_dir`` replace them.

    Attributes:
        root: dataset folder.
        train_split / val_split: split names, e.g. 'train2017', 'val2017' (a synthetic dataset's
            are fixed: 'train' and 'val').
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
        if self.synthetic != "none":
            # the bundled datasets' splits are fixed: a changed split would be silently unused
            for name in ("train_split", "val_split"):
                if getattr(self, name) != self._fields[name].default:
                    raise self.error(name, f"does not apply to synthetic '{self.synthetic}' data "
                                     "(its splits are 'train' and 'val'); evaluate other files "
                                     "with dataset.val_ann_file and dataset.val_image_dir")
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
        max_num_crowd: crowd (iscrowd) regions padded/capped per image in a batch, for families
            whose RoI sampler ignores them (``roi_sampler.crowd_iof``); an image with more
            keeps its largest and the loader counts and warns about the rest.
        loader_workers: data loading processes.
        skip_bad_images: a missing or corrupt image is skipped and counted (its batch slot is
            filled by another image of the batch, flagged invalid) instead of stopping the run
            with an error naming the file.
    """

    short: int = field(800, check=positive)
    long: int = field(1333, check=positive)
    flip: bool = True
    max_num_gt: int = field(100, check=positive)
    max_num_crowd: int = field(16, check=positive)
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


class MixedPrecisionConfig(Section):
    """How ``precision`` 'fp16' / 'bf16' runs (ignored for 'fp32').

    The listed components compute in the low precision (their convolutions and fc layers, and
    whatever MXNet's AMP op lists allow to follow them); everything else stays float32: the
    losses, sigmoid/softmax, proposal generation and sampling, RoIAlign (its inputs are cast
    back to float32), box decoding and NMS. Parameters stay float32 (master weights) and are
    cast inside the graph. fp16 gradients are protected by dynamic loss scaling; bf16 has
    float32's exponent range and needs none.

    Attributes:
        components: the components that run in low precision, names from the family's
            ``precision_components`` (its default: all of them).
        initial_loss_scale: fp16: the loss scale of the first iteration (a power of two).
        growth_interval: fp16: the scale doubles after this many consecutive finite steps.
        min_loss_scale: fp16: an overflow at this scale stops training (the gradients are
            not finite at any scale: the run diverged).
    """

    components: tuple[str, ...] = ()
    initial_loss_scale: float = field(2.0 ** 16, check=positive)
    growth_interval: int = field(2000, check=positive)
    min_loss_scale: float = field(1.0, check=positive)

    def validate(self):
        if len(set(self.components)) != len(self.components):
            raise self.error("components", f"has duplicates: {self.components}")
        if self.min_loss_scale > self.initial_loss_scale:
            raise self.error("min_loss_scale", f"({self.min_loss_scale}) must be <= "
                             f"mixed_precision.initial_loss_scale ({self.initial_loss_scale})")


class DetectorConfig(Section):
    """The run settings of an experiment, whatever the detector family.

    Class attributes (set by each family; not config fields):
        detector_class: the detector built from this config (``detector_class(cfg)``, an
            implementation of ``simpledet.detectors.base.Detector``).
        precision_components: the components the family's detector marks for mixed
            precision, in graph order; the default of ``mixed_precision.components``.

    Attributes:
        name: experiment name; the loader sets it to the config file's stem when left None.
        output_root: experiments are written to {output_root}/{name}.
        seed: random seed of parameter init, sampling and data order.
        pretrain: 'auto' (the family's default file, see :meth:`auto_pretrain_path`), a path
            to a .params file, or None / 'none' to train from scratch.
        pretrain_strict: the pretrained file must hold every backbone parameter with the
            model's shape, else training stops with an error naming them (head parameters are
            expected to be missing); False allows a partial load: what is missing or does not
            fit is initialized and reported in the log (see simpledet.engine.pretrained).
        precision: 'fp32', or mixed precision 'fp16' (GPU only, dynamic loss scaling) /
            'bf16' (CPU through MKLDNN, or GPU); master weights stay fp32. See
            ``mixed_precision`` for what runs in low precision.
    """

    detector_class: ClassVar[Any] = None
    precision_components: ClassVar[tuple] = ()

    name: str | None = None
    output_root: str = "experiments"
    seed: int = 0
    pretrain: str | None = "auto"
    pretrain_strict: bool = True
    precision: Literal["fp32", "fp16", "bf16"] = "fp32"
    mixed_precision: MixedPrecisionConfig
    dataset: DatasetConfig
    input: InputConfig
    runtime: RuntimeConfig
    train: TrainConfig
    test: TestConfig

    def __init__(self, **values):
        super().__init__()
        self.mixed_precision.components = tuple(self.precision_components)
        self.update(values)

    def auto_pretrain_path(self) -> str:
        """The .params file ``pretrain='auto'`` stands for (the family's backbone weights)."""
        raise NotImplementedError(f"{type(self).__name__} has no default pretrained file")

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
    def pretrain_path(self) -> str | None:
        """The .params file to initialize from, or None to train from scratch."""
        if self.pretrain == "auto":
            return self.auto_pretrain_path()
        return self.pretrain

    @property
    def experiment_dir(self) -> str:
        """Folder of checkpoints, logs and the resolved config: {output_root}/{name}."""
        return f"{self.output_root}/{self.name or 'unnamed'}"

    def validate(self):
        components = self.mixed_precision.components
        unknown = [c for c in components if c not in self.precision_components]
        if unknown:
            raise ConfigError(
                f"'mixed_precision.components' has {unknown}, not components of "
                f"{type(self).__name__}", key="mixed_precision.components",
                suggestion="choose from " + ", ".join(repr(c) for c in self.precision_components))
        if self.precision != "fp32" and not components:
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
