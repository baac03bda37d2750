"""Training from scratch on your own data, by example: Faster R-CNN FPN on the COCO-like
collage of real photographs that scripts/make_collage.py writes (64 of COCO's 80 classes with
COCO's ids, 640 x 360..512 portrait and landscape images, objects from 6 px to most of the
image, up to 40 per image), at 320x480 on CPU.

    python scripts/make_collage.py --out data/collage
    python detection_train.py --config config/collage/faster_fpn.py
    python detection_test.py --config config/collage/faster_fpn.py

For your data: point dataset.root (or dataset.train_ann_file / train_image_dir ...) at it, set
dataset.class_names to its categories in id order, the input size and the schedule. The recipe
is config/_base/scratch.py; docs/from_scratch.md shows the shapes recipe diverging on this set
and this one training.
"""
from _base.faster_fpn import faster_fpn, small_fpn
from _base.scratch import from_scratch, small_cpu_model

from simpledet.config.faster_rcnn import COCO_CLASS_NAMES

cfg = small_fpn(small_cpu_model(from_scratch(faster_fpn())))
cfg.dataset.root = "data/collage"
cfg.dataset.train_split = "train"
cfg.dataset.val_split = "val"
cfg.dataset.class_names = COCO_CLASS_NAMES
cfg.input.short = 320
cfg.input.long = 480
cfg.train.iters_at_batch16 = 200  # 800 iterations at 4 images: 25 epochs of 128 images
cfg.train.lr_steps_at_batch16 = (160, 185)
