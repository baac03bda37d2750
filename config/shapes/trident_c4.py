"""Quickstart: TridentNet (C4) trained from scratch on the bundled synthetic shapes dataset
(generated on first use) on CPU; TridentFast is the same checkpoint tested with the middle
branch alone.

    python detection_train.py --config config/shapes/trident_c4.py
    python detection_test.py --config config/shapes/trident_c4.py
    python detection_test.py --config config/shapes/trident_c4.py --set trident.test_branch=1

The model and schedule are the Faster R-CNN C4 quickstart's (config/shapes/faster_c4.py:
half-width ResNet-18 v1b, anchors 16..256 pixels, res5 at stride 2, 3200 iterations of 4
images) with the trident recipe of config/_base/trident_c4.py on res4's second unit (ResNet-18
has two). Per branch-image it samples 12 RoIs (36 per image, Faster's quickstart 32) from 200
proposals and tests 200 proposals, so the RoI head costs about what Faster's does (16 per
branch-image made the 3200 iterations take ~16.4 min here; 12 train them in 14 min 52 s).

Valid ranges, scaled to the shapes objects: the gt boxes' sqrt(area) spans 11..262 pixels
(train set percentiles 25 / 50 / 75: 28 / 62 / 114; simpledet.data.shapes.AREA_BUCKETS gives
the shapes' own areas, their boxes are larger). Branch 0 (dilation 1) trains on (0, 64) and
branch 2 (dilation 3) on (64, inf), each about half the train boxes (51 % and 49 %); the middle
branch (dilation 2) trains on every box, (0, inf), because TridentFast tests it alone and must
find every size. Measured (bbox AP on the val split, 2026-12-03): with the COCO-like middle
range (24, 128) (60 % of the boxes) TridentNet reached 0.506 and TridentFast 0.456 (small
objects 0.406 -> 0.309: the middle branch never trained on them); with (0, inf) TridentNet
0.508 and TridentFast 0.484. detectron2's and mmdetection's TridentFast likewise train their
branches on every box.
"""
from _base.shapes import on_shapes
from _base.trident_c4 import trident_c4

cfg = on_shapes(trident_c4())
cfg.trident.valid_ranges = ((0.0, 64.0), (0.0, -1.0), (64.0, -1.0))
cfg.rpn.anchor_scales = (1.0, 2.0, 4.0, 8.0, 16.0)
cfg.rpn.conv_channels = 128
cfg.rpn.train_pre_nms = 2000
cfg.rpn.train_post_nms = 200
cfg.rpn.test_pre_nms = 1000
cfg.rpn.test_post_nms = 200
cfg.roi_sampler.batch_per_image = 12
cfg.roi_sampler.fg_fraction = 0.5
cfg.roi_sampler.add_gt_as_proposals = True  # from scratch the early proposals are poor
cfg.bbox_head.c5_stride = 2

cfg.train.lr_per_16_images = 0.08
cfg.train.iters_at_batch16 = 800  # 3200 iterations at 4 images: ~13 epochs of 1000 images
cfg.train.lr_steps_at_batch16 = (640, 740)
cfg.train.warmup_factor = 1.0 / 3.0
