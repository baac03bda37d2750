"""Target assigners (simpledet.data.targets): the loader and the batch layout take any assigner,
in order, from the image's random stream; names must not collide; no assigner, no targets."""
import functools
import os
import pickle

import cv2
import numpy as np
import pytest

from simpledet.data.anchor_target import feature_levels
from simpledet.data.layout import IMAGE_INPUTS, batch_layout, graph_inputs
from simpledet.data.loader import DetectionLoader
from simpledet.data.targets import RpnAnchorAssigner, TargetAssigner


class CountAssigner(TargetAssigner):
    """A toy second target: the image's gt count and one draw from its random stream."""

    names = ("gt_count", "draw")

    def outputs(self, bucket_h, bucket_w):
        return {"gt_count": ((1,), np.int32), "draw": ((2,), np.float32)}

    def assign(self, sample, rng, out):
        out["gt_count"][0] = len(sample.boxes)
        out["draw"][:] = rng.random(2)


def rpn():
    return RpnAnchorAssigner(functools.partial(feature_levels, strides=(16,)), (2.0,),
                             (0.5, 1.0, 2.0), batch_size=16)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    directory = tmp_path_factory.mktemp("targets")
    out = []
    for i, (height, width) in enumerate([(40, 60), (60, 40), (50, 70), (30, 45)]):
        path = os.path.join(str(directory), f"{i}.png")
        cv2.imwrite(path, np.full((height, width, 3), 40 * i, np.uint8))
        boxes = np.array([[2, 3, 20, 25], [10, 5, 30, 28]][:1 + i % 2], np.float32)
        out.append({"image_id": i, "file_name": path, "height": height, "width": width,
                    "boxes": boxes, "classes": np.ones(len(boxes), np.int32)})
    return out


def loader(records, assigners, **kw):
    return DetectionLoader(records, batch_size=2, short_sides=(64,), long_side=96,
                           mean=(0, 0, 0), std=(1, 1, 1), assigners=assigners, num_workers=0,
                           seed=3, **kw)


def test_a_second_assigner_after_rpn_leaves_rpn_unchanged(records):
    alone = list(loader(records, [rpn()]))
    both = list(loader(records, [rpn(), CountAssigner()]))
    assert len(alone) == len(both) == 3  # 3 landscape images in 2 batches, 1 portrait
    for a, b in zip(alone, both):
        assert list(b) == list(a) + ["gt_count", "draw"]
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
        counts = [(row[:, 4] > 0).sum() for row in b["gt_boxes"]]
        assert b["gt_count"][:, 0].tolist() == counts
        assert b["draw"].dtype == np.float32 and len(np.unique(b["draw"])) == 4
    # Before the RPN assigner, it draws first: the RPN sampling sees another stream.
    first = list(loader(records, [CountAssigner(), rpn()]))
    assert any(not np.array_equal(f["rpn_label"], a["rpn_label"]) for f, a in zip(first, alone))


def test_no_assigner_no_targets_and_test_mode_ignores_them(records):
    for batch in loader(records, []):
        assert set(batch) == {*IMAGE_INPUTS, "image_ids", "valid"}
    for batch in loader(records, [rpn()], for_training=False):
        assert "rpn_label" not in batch


def test_layout_asks_the_assigners():
    layout = batch_layout(2, 64, 96, 5, [rpn(), CountAssigner()])
    num = 3 * 4 * 6
    assert layout["rpn_label"] == ((2, num), np.float32)
    assert layout["rpn_target"] == layout["rpn_weight"] == ((2, 4 * num), np.float32)
    assert layout["gt_count"] == ((2, 1), np.int32) and layout["draw"] == ((2, 2), np.float32)
    assert graph_inputs([rpn(), CountAssigner()]) == (
        "data", "im_info", "gt_boxes", "rpn_label", "rpn_target", "rpn_weight", "gt_count",
        "draw")
    with pytest.raises(ValueError, match="declares the batch array 'rpn_label'"):
        batch_layout(1, 64, 96, 5, [rpn(), rpn()])


def test_rpn_assigner_pickles_and_reads_the_config_section():
    from simpledet.config.faster_rcnn import FasterRcnnConfig

    section = FasterRcnnConfig().rpn
    assigner = RpnAnchorAssigner.from_config(section, functools.partial(feature_levels,
                                                                        strides=(8,)))
    copy = pickle.loads(pickle.dumps(assigner))
    assert repr(copy) == repr(assigner)
    assert (copy.scales, copy.ratios, copy.batch_size, copy.pos_thresh, copy.neg_thresh) == (
        section.anchor_scales, section.anchor_ratios, section.batch_per_image,
        section.pos_iou, section.neg_iou)
    assert copy.crowd_iof == 0.5
    assert copy.num_anchors(64, 96) == section.num_anchors * 8 * 12
