"""Pictures of detections: boxes, 'class score' labels and masks drawn on an image.

One drawing serves ``detection_test.py --vis`` and ``scripts/demo.py``. What keeps a picture
legible:
- small images are drawn upscaled so the long side is at least ``min_long_side`` (640) pixels
  (a 256x320 shapes image becomes 512x640), never downscaled; line widths and the font grow
  with the picture;
- only detections scoring at least ``score_thresh`` (0.5: the confident ones) are drawn;
- one colour per class (a fixed list of well-separated colours, the same in every picture);
- each label is dark or light text on a box filled with its class colour, placed above its
  box, else inside its top edge, else below it (the first spot that does not cover an earlier
  label; the best scores are placed first), and always kept inside the picture;
- boxes are drawn lowest score first so the best ones end on top, and labels after all boxes so
  no line crosses a label.

Boxes follow the "+1" convention of simpledet.core.boxes ([x1, x2] covers pixels x1..x2), so a
box drawn at scale f covers canvas pixels [x1 * f, (x2 + 1) * f - 1].
"""
import colorsys
from dataclasses import dataclass

import numpy as np

__all__ = ["DEFAULT_SCORE_THRESH", "MIN_LONG_SIDE", "DrawnDetection", "Layout", "class_color",
           "class_name", "display_scale", "draw_detections", "layout_detections",
           "select_detections", "write_picture"]

DEFAULT_SCORE_THRESH = 0.5
MIN_LONG_SIDE = 640
MASK_ALPHA = 0.45
_GOLDEN = 0.618033988749895
_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX


# RGB: saturated, well-separated colours that read on photos and on each other; labels past
# the list take golden-ratio hue steps
PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
           (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128),
           (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0), (170, 255, 195),
           (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128), (255, 255, 255))


def class_color(label):
    """The BGR colour (3 ints) of class ``label`` (1..K): PALETTE for the first 20 labels, then
    hues stepping by the golden ratio, saturation and value alternating in three tiers."""
    label = int(label)
    if 1 <= label <= len(PALETTE):
        r, g, b = PALETTE[label - 1]
        return b, g, r
    hue = (label * _GOLDEN) % 1.0
    tier = label % 3
    saturation, value = (0.85, 1.0, 0.65)[tier], (0.95, 0.75, 1.0)[tier]
    r, g, b = colorsys.hsv_to_rgb(hue, saturation, value)
    return int(round(b * 255)), int(round(g * 255)), int(round(r * 255))


def text_color(background_bgr):
    """Black on light backgrounds, white on dark ones (BT.601 luma)."""
    b, g, r = background_bgr
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b >= 140 else (255, 255, 255)


def class_name(label, class_names):
    """class_names[label - 1], or the number itself for a label outside 1..K."""
    label = int(label)
    return class_names[label - 1] if 0 < label <= len(class_names) else str(label)


def display_scale(height, width, min_long_side=MIN_LONG_SIDE):
    """The factor an image is drawn at: min_long_side / its long side when that is > 1, else 1
    (large images are drawn as they are)."""
    return max(1.0, float(min_long_side) / max(int(height), int(width), 1))


def select_detections(det, score_thresh=DEFAULT_SCORE_THRESH):
    """Row indices of the detections scoring >= score_thresh, best first (ties keep order)."""
    scores = np.asarray(det["scores"], dtype=np.float64).reshape(-1)
    keep = np.flatnonzero(scores >= score_thresh)
    return keep[np.argsort(-scores[keep], kind="stable")]


@dataclass(frozen=True)
class DrawnDetection:
    """One drawn detection (canvas pixels, inclusive corners).

    Attributes:
        index: its row in the detections.
        label / score / text: class label (1..K), score and the label text 'name 0.93'.
        color: BGR of its class.
        box: (x1, y1, x2, y2) of the box outline.
        label_box: (x1, y1, x2, y2) of the filled label background.
    """

    index: int
    label: int
    score: float
    text: str
    color: tuple
    box: tuple
    label_box: tuple


@dataclass(frozen=True)
class Layout:
    """Where everything goes on the canvas.

    Attributes:
        scale: the display scale (see display_scale).
        height / width: the canvas size.
        font_scale / font_thickness / line_width: cv2 text and box line sizes.
        items: the drawn detections, best score first.
    """

    scale: float
    height: int
    width: int
    font_scale: float
    font_thickness: int
    line_width: int
    items: tuple


def _overlap(a, b):
    """Intersection area of two inclusive (x1, y1, x2, y2) rectangles."""
    w = min(a[2], b[2]) - max(a[0], b[0]) + 1
    h = min(a[3], b[3]) - max(a[1], b[1]) + 1
    return max(w, 0) * max(h, 0)


def _fit_text(text, font_scale, thickness, max_width):
    """The text (cut with '..' when wider than max_width) and its (width, height, baseline)."""
    import cv2

    while True:
        (width, height), baseline = cv2.getTextSize(text, _FONT, font_scale, thickness)
        if width <= max_width or len(text) <= 3:
            return text, width, height, baseline
        text = text[:-3] + ".."


def _place_label(box, size, canvas_hw, placed):
    """The label rectangle: above the box, else inside its top edge, else below it; each
    candidate shifted into the canvas; the first that covers no placed label wins, else the
    one covering least."""
    label_w, label_h = size
    canvas_h, canvas_w = canvas_hw
    x1, y1, _, y2 = box
    candidates = []
    for top in (y1 - label_h, y1, y2 + 1):
        left = min(max(x1, 0), canvas_w - label_w)
        top = min(max(top, 0), canvas_h - label_h)
        candidates.append((max(left, 0), max(top, 0), max(left, 0) + label_w - 1,
                           max(top, 0) + label_h - 1))
    covered = [sum(_overlap(c, p) for p in placed) for c in candidates]
    return candidates[int(np.argmin(covered))]


def layout_detections(image_hw, det, class_names, score_thresh=DEFAULT_SCORE_THRESH,
                      min_long_side=MIN_LONG_SIDE):
    """Computes the picture's layout without drawing.

    Args:
        image_hw: (height, width) of the original image.
        det: {"boxes" (N, 4) [x1, y1, x2, y2] original pixels, "scores" (N,), "classes" (N,)}.
        class_names: the K class names (label l is class_names[l - 1]).
        score_thresh: detections below it are left out.
        min_long_side: small images are drawn upscaled to this long side.

    Returns:
        a Layout.
    """
    height, width = int(image_hw[0]), int(image_hw[1])
    scale = display_scale(height, width, min_long_side)
    canvas_h, canvas_w = int(round(height * scale)), int(round(width * scale))
    long_side = max(canvas_h, canvas_w)
    font_scale = max(0.55, long_side / 1160.0)
    font_thickness = max(1, int(round(font_scale * 1.6)))
    line_width = max(2, int(round(long_side / 320.0)))
    pad = max(2, int(round(3 * font_scale)))
    boxes = np.asarray(det["boxes"], dtype=np.float64).reshape(-1, 4)
    items, placed = [], []
    for i in select_detections(det, score_thresh):
        label, score = int(det["classes"][i]), float(det["scores"][i])
        bx1, by1, bx2, by2 = boxes[i]
        box = (int(np.clip(round(bx1 * scale), 0, canvas_w - 1)),
               int(np.clip(round(by1 * scale), 0, canvas_h - 1)),
               int(np.clip(round((bx2 + 1) * scale) - 1, 0, canvas_w - 1)),
               int(np.clip(round((by2 + 1) * scale) - 1, 0, canvas_h - 1)))
        text, text_w, text_h, baseline = _fit_text(
            f"{class_name(label, class_names)} {score:.2f}", font_scale, font_thickness,
            canvas_w - 2 * pad)
        size = (min(text_w + 2 * pad, canvas_w), min(text_h + baseline + 2 * pad, canvas_h))
        label_box = _place_label(box, size, (canvas_h, canvas_w), placed)
        placed.append(label_box)
        items.append(DrawnDetection(index=int(i), label=label, score=score, text=text,
                                    color=class_color(label), box=box, label_box=label_box))
    return Layout(scale=scale, height=canvas_h, width=canvas_w, font_scale=font_scale,
                  font_thickness=font_thickness, line_width=line_width, items=tuple(items))


def _mask_array(mask, height, width):
    """A detection's mask as a bool (height, width) array (from an RLE dict or an array)."""
    if isinstance(mask, dict):
        from pycocotools import mask as mask_utils

        mask = mask_utils.decode(mask)
    mask = np.asarray(mask)
    if mask.shape[:2] != (height, width):
        raise ValueError(f"mask of {mask.shape[0]}x{mask.shape[1]} for an image of "
                         f"{height}x{width}")
    return mask.astype(bool)


def draw_detections(image_rgb, det, class_names, score_thresh=DEFAULT_SCORE_THRESH,
                    min_long_side=MIN_LONG_SIDE):
    """Draws the detections scoring >= score_thresh (see the module docstring).

    Args:
        image_rgb: uint8 (H, W, 3) RGB image.
        det: {"boxes", "scores", "classes"} in original pixels (layout_detections), with
            "masks" (N RLE dicts or (N, H, W) binary arrays) for instance segmentation.
        class_names: the K class names.
        score_thresh: the least score drawn.
        min_long_side: small images are upscaled to this long side.

    Returns:
        uint8 BGR canvas (round(H * s), round(W * s), 3) for cv2.imwrite, s = display_scale.
    """
    import cv2

    height, width = image_rgb.shape[:2]
    layout = layout_detections((height, width), det, class_names, score_thresh, min_long_side)
    canvas = np.ascontiguousarray(image_rgb[:, :, ::-1])
    if layout.scale != 1.0:
        canvas = cv2.resize(canvas, (layout.width, layout.height), interpolation=cv2.INTER_CUBIC)
    masks = det.get("masks")
    if masks is not None:
        for item in reversed(layout.items):  # best last: on top
            mask = _mask_array(masks[item.index], height, width).astype(np.uint8)
            if layout.scale != 1.0:
                mask = cv2.resize(mask, (layout.width, layout.height),
                                  interpolation=cv2.INTER_NEAREST)
            inside = mask.astype(bool)
            color = np.array(item.color, dtype=np.float32)
            canvas[inside] = (1 - MASK_ALPHA) * canvas[inside] + MASK_ALPHA * color
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(canvas, contours, -1, item.color, 1, cv2.LINE_AA)
    for item in reversed(layout.items):
        x1, y1, x2, y2 = item.box
        cv2.rectangle(canvas, (x1, y1), (x2, y2), item.color, layout.line_width, cv2.LINE_AA)
    for item in reversed(layout.items):
        lx1, ly1, lx2, ly2 = item.label_box
        cv2.rectangle(canvas, (lx1, ly1), (lx2, ly2), item.color, cv2.FILLED)
        (_, text_h), baseline = cv2.getTextSize(item.text, _FONT, layout.font_scale,
                                                layout.font_thickness)
        pad = (ly2 - ly1 + 1 - text_h - baseline) // 2
        cv2.putText(canvas, item.text, (lx1 + pad, ly1 + pad + text_h), _FONT,
                    layout.font_scale, text_color(item.color), layout.font_thickness,
                    cv2.LINE_AA)
    return canvas


def write_picture(path, image_rgb, det, class_names, score_thresh=DEFAULT_SCORE_THRESH,
                  min_long_side=MIN_LONG_SIDE):
    """draw_detections written to ``path`` (the format from its extension, e.g. .png).

    Raises:
        OSError: naming the path, when the file cannot be written.
    """
    import cv2

    canvas = draw_detections(image_rgb, det, class_names, score_thresh, min_long_side)
    if not cv2.imwrite(str(path), canvas):
        raise OSError(f"{path}: cannot write the picture")
    return str(path)
