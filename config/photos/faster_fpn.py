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
from _base.photos import on_photos

cfg = small_fpn(on_photos(faster_fpn()))
