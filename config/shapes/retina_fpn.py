"""Quickstart: RetinaNet with a small P3-P7 FPN, trained from scratch on the bundled synthetic
shapes dataset (generated on first use) on CPU.

    python detection_train.py --config config/shapes/retina_fpn.py
    python detection_test.py --config config/shapes/retina_fpn.py

The model is the recipe of config/_base/retina_fpn.py scaled to 256x320 images with 6 classes
and a 2-core CPU (``small_retina``): ResNet-18 v1b at half width (32), BatchNorm, trained from
scratch; 48-channel FPN and towers (four convs each, shared over P3-P7), 9 anchors per location.
Two changes to the shapes setup (config/_base/shapes.py) keep it learning from the first
iterations without diverging: the head's convs start from N(0, 0.05) instead of N(0, 0.01) (at
48 channels 0.01 shrinks the signal ~7x per tower layer, and the focal loss sat at its prior
for ~150 iterations), and global-norm gradient clipping at 10 stays on (without it the
unnormalized regression tower diverged at iteration 90-140 at this learning rate).
"""
from _base.retina_fpn import retina_fpn, small_retina
from _base.shapes import on_shapes

cfg = small_retina(on_shapes(retina_fpn()))
cfg.head.weight_std = 0.05
cfg.train.clip_grad_norm = 10.0
cfg.train.lr_per_16_images = 0.08
cfg.train.iters_at_batch16 = 600  # 2400 iterations at 4 images: ~10 epochs of 1000 images
cfg.train.lr_steps_at_batch16 = (480, 560)
