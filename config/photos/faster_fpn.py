"""Overfit check on real photographs: Faster R-CNN FPN trained from scratch on the 8
hand-annotated photographs of simpledet.data.photos (built offline from scikit-image and
matplotlib files on first use) and tested on the same images.

    python detection_train.py --config config/photos/faster_fpn.py
    python detection_test.py --config config/photos/faster_fpn.py

A detector that cannot fit 8 images has a broken target, coordinate map or recipe; the photos
break the symmetries of the shapes set (sizes from 300x451 to 500x741 resized to 320/480, so
the scale is never 1; two portrait images; category ids 1..97 with gaps; 21 coins in one
image; a crowd region). tests/e2e/test_overfit.py trains this config and requires AP50 >= 0.5.
The model is the shapes FPN quickstart's (``small_fpn``) with the from-scratch recipe of
config/_base/scratch.py.
"""
from _base.faster_fpn import faster_fpn, small_fpn
from _base.scratch import from_scratch, small_cpu_model

from simpledet.data.photos import CLASS_NAMES

cfg = small_fpn(small_cpu_model(from_scratch(faster_fpn())))
cfg.dataset.synthetic = "photos"
cfg.dataset.class_names = CLASS_NAMES
cfg.input.short = 320
cfg.input.long = 480
cfg.train.iters_at_batch16 = 100  # 400 iterations at 4 images: 200 passes over the 8 images
cfg.train.lr_steps_at_batch16 = (80, 95)
cfg.train.warmup_iters = 100
cfg.train.checkpoint_interval = 10000
