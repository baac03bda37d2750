"""From a config to the objects a run needs: dataset checks, detector, datasets, loaders.

The dataset check (:func:`check_dataset_files`) touches only the file system, so a CLI can fail
on missing data before it creates the experiment folder or builds a graph.
"""
import os

from simpledet.data.transforms import bucket_shape

SIZE_DIVISOR = 32  # every backbone stride (up to 32; P6 is subsampled) divides the buckets
COCO_HOWTO = (
    "To get COCO 2017, download http://images.cocodataset.org/zips/train2017.zip, "
    "http://images.cocodataset.org/zips/val2017.zip and\n"
    "http://images.cocodataset.org/annotations/annotations_trainval2017.zip; unpack the images "
    "to <root>/images/{train2017,val2017}/\nand the jsons to <root>/annotations/ (or point "
    "dataset.root / dataset.*_ann_file / dataset.*_image_dir elsewhere with --set).\n"
    "To try the pipeline without COCO: python scripts/make_shapes.py --out data/shapes")


class DatasetMissingError(FileNotFoundError):
    """The configured annotation file or image folder does not exist."""


def dataset_files(cfg, split):
    """(annotation file, image folder) of the config's 'train' or 'val' split."""
    if split == "train":
        return cfg.dataset.train_annotations, cfg.dataset.train_images
    if split == "val":
        return cfg.dataset.val_annotations, cfg.dataset.val_images
    raise ValueError(f"split must be 'train' or 'val', got {split!r}")


def prepare_dataset(cfg, log=None):
    """Generates the config's synthetic dataset on first use (a no-op for file datasets).

    Returns:
        The dataset folder that was generated or found, or None for file datasets.
    """
    params = cfg.dataset.synthetic_params
    if params is None:
        return None
    if cfg.dataset.synthetic == "photos":
        from simpledet.data.photos import PHOTOS, ensure_photos_dataset, photos_root

        root = photos_root(params)
        if log is not None and not os.path.isdir(root):
            log(f"building the 'photos' dataset ({len(PHOTOS)} photographs from installed "
                f"packages) into {root} (first use only)")
        return ensure_photos_dataset(root).root
    from simpledet.data.shapes import ensure_shapes_dataset, shapes_root

    root = shapes_root(params)
    if log is not None and not os.path.isdir(root):
        log(f"generating the synthetic '{cfg.dataset.synthetic}' dataset ({params['train']} "
            f"train / {params['val']} val images) into {root} (first use only)")
    return ensure_shapes_dataset(root, train=params["train"], val=params["val"],
                                 seed=params["seed"], size=params["size_hw"],
                                 image_format=params["image_format"]).root


def check_dataset_files(cfg, split):
    """Raises DatasetMissingError naming both expected paths and how to get them."""
    ann_file, image_dir = dataset_files(cfg, split)
    missing = []
    if not os.path.isfile(ann_file):
        missing.append(f"annotation file {os.path.abspath(ann_file)}")
    if not os.path.isdir(image_dir):
        missing.append(f"image folder {os.path.abspath(image_dir)}")
    if missing:
        raise DatasetMissingError(
            f"the {split} data of config '{cfg.name}' is missing: "
            + " and ".join(missing) + f".\nExpected annotations at {ann_file} and images in "
            f"{image_dir} (dataset.root={cfg.dataset.root!r}, relative to the working "
            f"directory).\n{COCO_HOWTO}")


def build_detector(cfg):
    """The detector the config's family names: ``cfg.detector_class(cfg)`` (a
    simpledet.detectors.base.Detector)."""
    detector_class = getattr(type(cfg), "detector_class", None)
    if detector_class is None:
        raise TypeError(f"{type(cfg).__name__} names no detector_class")
    return detector_class(cfg)


def build_dataset(cfg, split, for_training):
    """A CocoDataset for the split, checked against cfg.dataset.class_names.

    Raises:
        DatasetError: the json's categories are not the configured classes.
    """
    from simpledet.data.coco import CocoDataset, DatasetError

    ann_file, image_dir = dataset_files(cfg, split)
    dataset = CocoDataset(ann_file, image_dir, for_training=for_training)
    expected = list(cfg.dataset.class_names)
    if list(dataset.class_names) != expected:
        raise DatasetError(
            f"{dataset.ann_file}: its {len(dataset.class_names)} categories "
            f"{list(dataset.class_names)[:6]}... differ from the config's {len(expected)} "
            f"dataset.class_names {expected[:6]}...; set dataset.class_names to the json's "
            f"category names in category-id order")
    return dataset


def bucket_shapes(cfg):
    """The (landscape, portrait) padded input shapes of the config's input size."""
    return (bucket_shape(1, 2, cfg.input.short, cfg.input.long, SIZE_DIVISOR),
            bucket_shape(2, 1, cfg.input.short, cfg.input.long, SIZE_DIVISOR))


def build_train_loader(cfg, records, detector, *, num_workers=None, rank=0, num_parts=1):
    """The training DetectionLoader: batch = images_per_device * devices, with the targets
    the detector asks for (``detector.target_assigners`` of the config's buckets)."""
    from simpledet.data.loader import DetectionLoader

    return DetectionLoader(
        records, batch_size=cfg.train.images_per_device * cfg.runtime.num_devices,
        short_sides=(cfg.input.short,), long_side=cfg.input.long,
        mean=cfg.backbone.pixel_mean, std=cfg.backbone.pixel_std, flip=cfg.input.flip,
        size_divisor=SIZE_DIVISOR, assigners=detector.target_assigners(bucket_shapes(cfg)),
        max_gt=cfg.input.max_num_gt,
        num_workers=cfg.input.loader_workers if num_workers is None else num_workers,
        shuffle=True, seed=cfg.seed, rank=rank, num_parts=num_parts, for_training=True,
        skip_bad_images=cfg.input.skip_bad_images)


def build_test_loader(cfg, records, *, num_workers=None):
    """The test DetectionLoader: every record once, in order; padding slots valid=False."""
    from simpledet.data.loader import DetectionLoader

    return DetectionLoader(
        records, batch_size=cfg.test.images_per_device * cfg.runtime.num_devices,
        short_sides=(cfg.input.short,), long_side=cfg.input.long,
        mean=cfg.backbone.pixel_mean, std=cfg.backbone.pixel_std, flip=False,
        size_divisor=SIZE_DIVISOR, max_gt=cfg.input.max_num_gt,
        num_workers=cfg.input.loader_workers if num_workers is None else num_workers,
        shuffle=False, seed=cfg.seed, for_training=False,
        skip_bad_images=cfg.input.skip_bad_images)
