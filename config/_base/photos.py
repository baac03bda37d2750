"""What the overfit configs on the 8 real photographs share (simpledet.data.photos, built
offline on first use): the dataset, 320/480 input, the from-scratch recipe of _base/scratch.py on
its small CPU model, and a 400-iteration schedule (200 passes over the 8 images) without
intermediate checkpoints.

Leaves call ``on_photos(cfg)`` on a detector-family config, then size the heads.
"""
from _base.scratch import from_scratch, small_cpu_model

from simpledet.data.photos import CLASS_NAMES


def on_photos(cfg):
    """Points ``cfg`` at the photos dataset with the overfit schedule; returns it."""
    small_cpu_model(from_scratch(cfg))
    cfg.dataset.synthetic = "photos"
    cfg.dataset.class_names = CLASS_NAMES
    cfg.input.short = 320
    cfg.input.long = 480
    cfg.train.iters_at_batch16 = 100  # 400 iterations at 4 images: 200 passes over the 8 images
    cfg.train.lr_steps_at_batch16 = (80, 95)
    cfg.train.warmup_iters = 100
    cfg.train.checkpoint_interval = 10000
    return cfg
