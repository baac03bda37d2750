"""Overfit check of Mask R-CNN on real photographs: config/photos/faster_fpn.py's model and
schedule with the FPN mask branch, trained from scratch on the 8 hand-annotated photographs
of simpledet.data.photos (rough polygon outlines; the coins' crowd region) and tested on the
same images.

    python detection_train.py --config config/photos/mask_fpn.py
    python detection_test.py --config config/photos/mask_fpn.py

tests/e2e/test_overfit.py trains it and requires segm AP50 >= 0.5 and bbox AP50 >= 0.5: the
mask targets, the polygon resize/flip, the pasting back into 300x451..500x741 originals at
non-unit scales and portrait images all have to be right for that.
"""
from _base.faster_fpn import small_fpn
from _base.mask_fpn import mask_fpn
from _base.photos import on_photos

cfg = small_fpn(on_photos(mask_fpn()))
cfg.mask_head.conv_channels = 48
