"""Quickstart: RPN-only (proposals alone) with a small FPN, trained from scratch on the bundled
synthetic shapes dataset (generated on first use) on CPU.

    python detection_train.py --config config/shapes/rpn_fpn.py
    python detection_test.py --config config/shapes/rpn_fpn.py     # proposal AR@100/300/1000

The model is config/_base/rpn_fpn.py scaled to 256x320 images and a 2-core CPU, as the Faster
quickstart (config/shapes/faster_fpn.py): ResNet-18 v1b at half width (32), BatchNorm, trained
from scratch; 48-channel FPN and RPN head; 1000 proposals per image in test. Measured: AR@100
0.503, AR@300 0.549, AR@1000 0.582 after 7-9 min on 2 cores (README, "RPN-only").

Anchors: the COCO recipe's one size per level, 8 x stride (32 px on P2 ... 512 px on P6), kept
because it is the one measured over the full schedule. The shapes objects are small (40% have
sqrt(area) 10-30 px, simpledet.data.shapes.AREA_BUCKETS): ``scripts/anchor_coverage.py
--config config/shapes/rpn_fpn.py --scales 8 --scales 4 --scales 4,5.66`` finds a train box's
best anchor at IoU >= 0.7 (an RPN positive by threshold) for 41% of the boxes with (8,) (18%
under 32 px), 38% with (4,), 81% with (4, 5.66) (two sizes half an octave apart). On the
400-iteration schedule (``--set train.iters_at_batch16=100 train.lr_steps_at_batch16=(80,93)``)
(8,) gave AR@100 0.255 / AR@1000 0.439 and (4,) 0.189 / 0.393: the smaller anchors alone do
not help. (4, 5.66) over the full schedule (``--set "rpn.anchor_scales=(4.0,5.66)"``, measured
2026-12-03) gave AR@100 0.446 / AR@300 0.520 / AR@1000 0.583 against (8,)'s 0.503 / 0.549 /
0.582: twice the anchors per position, each trained on fewer positives in six epochs, rank
worse in the top 100 although twice as many boxes have a positive anchor. (8,) stays.
"""
from _base.rpn_fpn import rpn_fpn, small_rpn_fpn
from _base.shapes import on_shapes

cfg = small_rpn_fpn(on_shapes(rpn_fpn()))
cfg.train.lr_per_16_images = 0.08
cfg.train.iters_at_batch16 = 400  # 1600 iterations at 4 images: ~6 epochs of 1000 images
cfg.train.lr_steps_at_batch16 = (320, 373)
