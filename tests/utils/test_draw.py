"""simpledet.utils.draw on synthetic detections: upscaling, threshold, colours, labels inside the
picture and apart, "+1" box mapping, masks."""
import numpy as np
import pytest

from simpledet.utils.draw import (
    DEFAULT_SCORE_THRESH,
    MIN_LONG_SIDE,
    class_color,
    display_scale,
    draw_detections,
    layout_detections,
)

NAMES = ("circle", "square", "triangle")
GREY = 128


def detections(boxes, scores, classes, masks=None):
    det = {"boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
           "scores": np.asarray(scores, np.float32), "classes": np.asarray(classes, np.int32)}
    if masks is not None:
        det["masks"] = masks
    return det


def grey(height, width):
    return np.full((height, width, 3), GREY, np.uint8)


@pytest.mark.parametrize("hw, scale", [((256, 320), 2.0), ((203, 131), 640 / 203),
                                       ((64, 80), 8.0), ((480, 640), 1.0), ((900, 700), 1.0)])
def test_small_images_are_upscaled_to_640_on_the_long_side(hw, scale):
    assert display_scale(*hw) == pytest.approx(scale)
    canvas = draw_detections(grey(*hw), detections([], [], []), NAMES)
    assert canvas.shape == (round(hw[0] * scale), round(hw[1] * scale), 3)
    assert max(canvas.shape[:2]) == max(MIN_LONG_SIDE, max(hw))


def test_boxes_map_to_the_canvas_with_the_plus_one_convention():
    # pixels 10..29 x 20..39 of a 256x320 image cover canvas pixels 20..59 x 40..79 at 2x
    layout = layout_detections((256, 320), detections([[10, 20, 29, 39]], [0.9], [1]), NAMES)
    assert layout.scale == 2.0 and (layout.height, layout.width) == (512, 640)
    assert layout.items[0].box == (20, 40, 59, 79)


def test_default_threshold_keeps_the_confident_detections_best_first():
    assert DEFAULT_SCORE_THRESH == 0.5
    det = detections([[10, 10, 50, 50]] * 5, [0.6, 0.49, 0.5, 0.95, 0.1], [1, 2, 3, 1, 2])
    layout = layout_detections((256, 320), det, NAMES)
    assert [item.index for item in layout.items] == [3, 0, 2]
    assert [item.text for item in layout.items] == ["circle 0.95", "circle 0.60",
                                                    "triangle 0.50"]
    assert [item.index for item in layout_detections((256, 320), det, NAMES, 0.05).items] == [
        3, 0, 2, 1, 4]
    # nothing below the threshold reaches the picture
    low = detections([[10, 10, 100, 100]], [0.3], [2])
    assert np.all(draw_detections(grey(256, 320), low, NAMES) == GREY)


def test_one_colour_per_class():
    colours = [class_color(label) for label in range(1, 81)]
    assert len(set(colours)) == 80  # COCO's 80 classes: all distinct
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in colours)
    det = detections([[10, 10, 60, 60], [100, 100, 150, 150], [200, 30, 250, 90]],
                     [0.9, 0.8, 0.7], [2, 2, 3])
    layout = layout_detections((256, 320), det, NAMES)
    assert layout.items[0].color == layout.items[1].color == class_color(2)
    assert layout.items[2].color == class_color(3) != class_color(2)
    canvas = draw_detections(grey(256, 320), det, NAMES)
    for item in layout.items:  # the box outline carries its class colour
        x1, y1, x2, y2 = item.box
        assert tuple(canvas[(y1 + y2) // 2, x1]) == item.color
        assert tuple(canvas[(y1 + y2) // 2, x2]) == item.color


def test_labels_are_filled_and_inside_the_picture_for_boxes_at_every_edge():
    height, width = 256, 320
    boxes = [[0, 0, 15, 12],                      # top-left corner: no room above
             [300, 120, 319, 140],                # right edge: the label is wider than the box
             [5, 240, 40, 255],                   # bottom edge
             [0, 0, width - 1, height - 1],       # the whole image
             [-20, -30, 400, 300]]                # past every edge
    det = detections(boxes, [0.9, 0.85, 0.8, 0.75, 0.7], [1, 2, 3, 1, 2])
    layout = layout_detections((height, width), det, NAMES)
    canvas = draw_detections(grey(height, width), det, NAMES)
    assert len(layout.items) == 5
    for item in layout.items:
        lx1, ly1, lx2, ly2 = item.label_box
        assert 0 <= lx1 < lx2 <= layout.width - 1 and 0 <= ly1 < ly2 <= layout.height - 1, item
        assert lx2 - lx1 > 40 and ly2 - ly1 >= 12  # big enough to read at 640 pixels
        x1, y1, x2, y2 = item.box
        assert 0 <= x1 <= x2 <= layout.width - 1 and 0 <= y1 <= y2 <= layout.height - 1
    # the label drawn last (the best score) shows its fill colour around its text
    best = layout.items[0]
    lx1, ly1, lx2, ly2 = best.label_box
    patch = canvas[ly1:ly2 + 1, lx1:lx2 + 1].reshape(-1, 3)
    fill = np.all(patch == best.color, axis=1).mean()
    assert 0.5 < fill < 0.98, fill  # mostly background colour, some text pixels


def test_labels_of_overlapping_boxes_do_not_cover_each_other():
    # three nearly identical boxes: above, inside and below give each label its own place
    det = detections([[100, 100, 200, 200], [102, 101, 201, 199], [99, 103, 198, 202]],
                     [0.9, 0.8, 0.7], [1, 2, 3])
    layout = layout_detections((256, 320), det, NAMES)
    rects = [item.label_box for item in layout.items]
    for i in range(len(rects)):
        for j in range(i + 1, len(rects)):
            a, b = rects[i], rects[j]
            assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1], (a, b)
    # the best label sits right above its box
    assert layout.items[0].label_box[3] == layout.items[0].box[1] - 1


def test_a_long_class_name_is_cut_to_the_picture_width():
    layout = layout_detections((64, 16), detections([[0, 0, 5, 5]], [0.9], [1]),
                               ("a very long class name " * 5,))
    item = layout.items[0]
    assert item.text.endswith("..") and item.label_box[2] <= layout.width - 1


@pytest.mark.parametrize("as_rle", [False, True])
def test_masks_are_tinted_in_their_class_colour(as_rle):
    height, width = 128, 160
    mask = np.zeros((1, height, width), np.uint8)
    mask[0, 40:80, 50:100] = 1
    masks = mask
    if as_rle:
        from pycocotools import mask as mask_utils

        masks = [mask_utils.encode(np.asfortranarray(mask[0]))]
    det = detections([[50, 40, 99, 79]], [0.9], [3], masks)
    canvas = draw_detections(grey(height, width), det, NAMES)
    scale = 4.0  # 160 -> 640
    inside = canvas[int(60 * scale), int(75 * scale)].astype(int)
    colour = np.array(class_color(3))
    assert np.all(np.abs(inside - (0.55 * GREY + 0.45 * colour)) <= 1), inside
    assert np.all(canvas[int(100 * scale), int(20 * scale)] == GREY)  # outside: untouched
