"""scripts/anchor_coverage.py: the best-anchor IoU of hand-placed boxes on the op's anchor grid,
boxes resized to input pixels and grouped by bucket, and a bad --scales flag."""
import importlib.util
import os
from types import SimpleNamespace

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_script():
    path = os.path.join(REPO, "scripts", "anchor_coverage.py")
    spec = importlib.util.spec_from_file_location("simpledet_anchor_coverage", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_best_anchor_iou_on_the_op_grid():
    script = load_script()
    # stride 4, scale 8, ratio 1: 32x32 anchors [-14, -14, 17, 17] + 4 * (x, y) ("+1" boxes)
    on_grid = np.array([[2, 2, 33, 33]], np.float32)  # the anchor at (x, y) = (4, 4)
    small = np.array([[0, 0, 9, 9]], np.float32)      # 10x10: at best inside a 32x32 anchor
    groups = [((64, 64), np.concatenate([on_grid, small]))]
    best = script.best_anchor_iou(groups, (4,), (8.0,), (1.0,))
    np.testing.assert_allclose(best, [1.0, 100 / 1024], rtol=1e-5)
    # scale 2: 8x8 anchors [-2, -2, 5, 5] + 4 * (x, y); [2, 2, 9, 9] lies inside the 10x10 box
    best = script.best_anchor_iou([((64, 64), small)], (4,), (2.0,), (1.0,))
    np.testing.assert_allclose(best, [64 / 100], rtol=1e-5)
    assert script.best_anchor_iou([], (4,), (8.0,), (1.0,)).shape == (0,)


def test_input_boxes_are_resized_and_grouped_by_bucket():
    script = load_script()
    cfg = SimpleNamespace(input=SimpleNamespace(short=100, long=200))
    records = [  # landscape at scale 0.5, portrait at scale 2, one image without boxes
        {"height": 200, "width": 300, "boxes": np.array([[10, 20, 49, 59]], np.float32)},
        {"height": 80, "width": 50, "boxes": np.array([[0, 0, 9, 19], [5, 5, 14, 14]],
                                                      np.float32)},
        {"height": 200, "width": 300, "boxes": np.zeros((0, 4), np.float32)},
    ]
    groups, sides = script.input_boxes(cfg, records, max_boxes=10)
    assert [len(boxes) for _, boxes in groups] == [1, 2]
    assert groups[0][0] != groups[1][0]  # landscape and portrait buckets
    # "+1" boxes as the loader maps them: [x1 * s, y1 * s, (x2 + 1) * s - 1, (y2 + 1) * s - 1]
    np.testing.assert_allclose(groups[0][1], [[5, 10, 24, 29]])
    np.testing.assert_allclose(groups[1][1], [[0, 0, 19, 39], [10, 10, 29, 29]])
    assert len(sides) == 3
    groups, sides = script.input_boxes(cfg, records, max_boxes=2)
    assert sum(len(boxes) for _, boxes in groups) == 2 and len(sides) == 2


def test_bad_scales_flag_is_one_line_error():
    script = load_script()
    assert script.parse_scales("4,5.66") == (4.0, 5.66)
    with pytest.raises(SystemExit, match="--scales 'four'"):
        script.parse_scales("four")
    with pytest.raises(SystemExit, match="positive"):
        script.parse_scales("4,0")
