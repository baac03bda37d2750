"""What every quickstart config on the synthetic shapes dataset shares: the dataset (generated
on first use), one CPU context, 256x320 input, and a half-width ResNet-18 v1b trained from
scratch with BatchNorm (fixed BN needs pretrained statistics, and there are no weights to load).

Leaves call ``on_shapes(cfg)`` on a detector-family config, then set the model and schedule.
"""
from simpledet.data.shapes import CLASS_NAMES


def on_shapes(cfg):
    """Points ``cfg`` at the shapes dataset and a small from-scratch CPU setup; returns it."""
    cfg.pretrain = None
    cfg.dataset.synthetic = "shapes"
    cfg.dataset.class_names = CLASS_NAMES
    cfg.runtime.device = "cpu"
    cfg.runtime.device_ids = (0,)
    cfg.runtime.kvstore = "local"

    cfg.backbone.variant = "v1b"
    cfg.backbone.depth = 18
    cfg.backbone.width = 32  # half-width ResNet-18: 2.4x faster steps than 64 on 2 cores
    cfg.backbone.normalizer = "bn"
    cfg.backbone.frozen_stages = 0

    cfg.input.short = 256
    cfg.input.long = 320
    cfg.input.loader_workers = 1

    cfg.train.images_per_device = 4
    cfg.train.warmup_iters = 100
    cfg.train.log_interval = 20
    cfg.train.checkpoint_interval = 500
    cfg.test.images_per_device = 4
    return cfg
