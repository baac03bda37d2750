"""Quickstart: TridentNet (C4) trained from scratch on the bundled synthetic shapes dataset
(generated on first use) on CPU; TridentFast is the same checkpoint tested with the middle
branch alone.

    python detection_train.py --config config/shapes/trident_c4.py
    python detection_test.py --config config/shapes/trident_c4.py
    python detection_test.py --config config/shapes/trident_c4.py --set trident.test_branch=1

The model and schedule are the Faster R-CNN C4 quickstart's (config/shapes/faster_c4.py:
half-width ResNet-18 v1b, anchors 16..256 pixels, res5 at stride 2, 3200 iterations of 4
images) with the trident recipe of config/_base/trident_c4.py on res4's second unit (ResNet-18
has two). Per branch-image it samples 16 RoIs (48 per image, Faster's quickstart 32) from 200
proposals and tests 200 proposals, so the RoI head costs about what Faster's does.

Valid ranges, scaled to the shapes objects: the gt boxes' sqrt(area) spans 11..262 pixels
(train set percentiles 25 / 50 / 75: 28 / 62 / 114; simpledet.data.shapes.AREA_BUCKETS gives
the shapes' own areas, their boxes are larger). (0, 64), (24, 128), (64, inf) keep the pattern
of COCO's (0, 90), (30, 160), (90, inf) (branch 1 starts near a third of branch 0's end, branch
2 starts where branch 0 ends) and give each branch about half the boxes: 51 %, 60 % and 49 %
of the train boxes (measured on the generated train annotations).
"""
from _base.shapes import on_shapes
from _base.trident_c4 import trident_c4

cfg = on_shapes(trident_c4())
cfg.trident.valid_ranges = ((0.0, 64.0), (24.0, 128.0), (64.0, -1.0))
cfg.rpn.anchor_scales = (1.0, 2.0, 4.0, 8.0, 16.0)
cfg.rpn.conv_channels = 128
cfg.rpn.train_pre_nms = 2000
cfg.rpn.train_post_nms = 200
cfg.rpn.test_pre_nms = 1000
cfg.rpn.test_post_nms = 200
cfg.roi_sampler.batch_per_image = 16
cfg.roi_sampler.fg_fraction = 0.5
cfg.roi_sampler.add_gt_as_proposals = True  # from scratch the early proposals are poor
cfg.bbox_head.c5_stride = 2

cfg.train.lr_per_16_images = 0.08
cfg.train.iters_at_batch16 = 800  # 3200 iterations at 4 images: ~13 epochs of 1000 images
cfg.train.lr_steps_at_batch16 = (640, 740)
cfg.train.warmup_factor = 1.0 / 3.0
