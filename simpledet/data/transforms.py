"""Per-image transforms of the loader: read, resize, flip, normalize, pad to a bucket, CHW.

Boxes follow the "+1" convention of simpledet.core.boxes: [x1, y1, x2, y2] covers pixels
x1..x2 of an image W pixels wide, so a horizontal flip maps x to W - 1 - x. Polygons (COCO
segmentation lists [x0, y0, x1, y1, ...]) are flipped the same way, as Detectron does, so boxes
and masks stay aligned.

Every function is pure given its arguments (randomness comes in as a ``np.random.Generator``),
so the loader's batches depend only on the seed, never on which worker built them.
"""
import cv2
import numpy as np

from simpledet.data.coco import decode_image_file


# Read the stored pixels as they are: COCO's width/height describe the file, not its EXIF view.
def read_image(path, expected_hw=None):
    """Reads an image file as RGB uint8 (H, W, 3): the loader's "read" step.

    One reader serves the whole package (simpledet.data.coco.decode_image_file): it also
    catches truncated JPEG/PNG files, which OpenCV decodes silently.

    Raises:
        DatasetError: naming the file, when it is missing, corrupt or truncated, or when its
            size differs from expected_hw (the record's boxes would be in another frame).
    """
    return decode_image_file(str(path), expected_hw)


def resize_scale(height, width, short_side, long_side):
    """Scale that brings the short side to short_side unless the long side would exceed
    long_side: min(short / min(h, w), long / max(h, w))."""
    return min(short_side / min(height, width), long_side / max(height, width))


def resize_image(image, short_side, long_side):
    """Resizes keeping the aspect ratio (bilinear).

    Args:
        image: (H, W, C) array.
        short_side, long_side: target sizes, see resize_scale.

    Returns:
        (resized image (h, w, C), im_info float32 (3,) [h, w, scale]) with
        h = round(H * scale), w = round(W * scale).
    """
    height, width = image.shape[:2]
    scale = resize_scale(height, width, short_side, long_side)
    new_h, new_w = int(round(height * scale)), int(round(width * scale))
    resized = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    return resized, np.array([new_h, new_w, scale], dtype=np.float32)


def scale_boxes(boxes, im_info):
    """Maps (N, 4) "+1" boxes of the original image into the image resized by s = im_info[2],
    clipped to it (im_info[:2]; its rounded size can leave a box a fraction past w - 1).

    A "+1" box [x1, x2] covers the pixel span [x1, x2 + 1), which resizing takes to
    [x1 * s, (x2 + 1) * s): the box [x1 * s, (x2 + 1) * s - 1]. So a box reaching the last
    pixel W - 1 reaches the last resized pixel W * s - 1 = w - 1. (x2 * s instead would end
    1 - s pixels past it when downscaling, and the clip would lose that for good: boxes at the
    right or bottom edge would come back from unscale_boxes up to 1 / s - 1 pixels short.)
    unscale_boxes is the inverse.

    Returns:
        (N, 4) float32.
    """
    scale = np.float32(im_info[2])
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * scale
    out[:, 2:] += scale - np.float32(1)
    out[:, 0::2] = np.clip(out[:, 0::2], 0, im_info[1] - 1)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, im_info[0] - 1)
    return out


def unscale_boxes(boxes, scale, height, width):
    """Maps (N, 4) "+1" boxes of the image resized by ``scale`` back to the original image of
    (height, width), clipped to it: the inverse of scale_boxes, x1 / s and (x2 + 1) / s - 1.

    Returns:
        (N, 4) float32.
    """
    scale = np.float32(scale)
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) / scale
    out[:, 2:] += np.float32(1) / scale - np.float32(1)
    out[:, 0::2] = np.clip(out[:, 0::2], 0, width - 1)
    out[:, 1::2] = np.clip(out[:, 1::2], 0, height - 1)
    return out


def scale_polygons(polygons, scale):
    """Scales a COCO polygon list [[x0, y0, x1, y1, ...], ...] by scale."""
    return [[float(v) * scale for v in poly] for poly in polygons]


def flip_image(image):
    """Mirrors an (H, W, ...) image left-right.

    Returns a view (no copy: normalize_pad_chw reads it directly); np.ascontiguousarray it
    before handing it to OpenCV."""
    return image[:, ::-1]


def flip_boxes(boxes, width):
    """Mirrors (N, 4) boxes in an image `width` pixels wide: x1' = W - 1 - x2, x2' = W - 1 - x1."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    out = boxes.copy()
    out[:, 0] = width - 1 - boxes[:, 2]
    out[:, 2] = width - 1 - boxes[:, 0]
    return out


def flip_polygons(polygons, width):
    """Mirrors a COCO polygon list: x' = W - x, y unchanged (polygon vertices are continuous
    coordinates, pixel px covering [px, px + 1); a "+1" box [x1, x2] mirrors to
    [W - 1 - x2, W - 1 - x1], the same span)."""
    out = []
    for poly in polygons:
        poly = np.asarray(poly, dtype=np.float64).copy()
        poly[0::2] = width - poly[0::2]
        out.append(poly.tolist())
    return out


def flip_segmentation(segmentation, width):
    """Mirrors one object's COCO segmentation: a polygon list, or an RLE dict (through
    pycocotools, since RLE runs are column-major and cannot be flipped in place)."""
    if not isinstance(segmentation, dict):
        return flip_polygons(segmentation, width)
    from pycocotools import mask as mask_utils

    rle = segmentation
    if isinstance(rle.get("counts"), list):  # uncompressed RLE
        rle = mask_utils.frPyObjects(rle, *rle["size"])
    mask = mask_utils.decode(rle)[:, ::-1]
    out = mask_utils.encode(np.asfortranarray(mask))
    out["counts"] = out["counts"].decode("ascii")
    return out


def random_flip(rng, image, boxes, segmentations=None, prob=0.5):
    """Flips image, boxes (and optionally segmentations) together with probability prob.

    Args:
        rng: np.random.Generator.
        image: (H, W, C) array.
        boxes: (N, 4) boxes of the image.
        segmentations: None, or N COCO segmentations (polygon lists or RLE dicts).

    Returns:
        (image, boxes, segmentations, flipped: bool).
    """
    if rng.random() >= prob:
        return image, boxes, segmentations, False
    width = image.shape[1]
    if segmentations is not None:
        segmentations = [flip_segmentation(s, width) for s in segmentations]
    return flip_image(image), flip_boxes(boxes, width), segmentations, True


def choose_short_side(rng, short_sides):
    """Multi-scale training: one short side drawn uniformly from the list (seeded by rng)."""
    short_sides = tuple(short_sides)
    if len(short_sides) == 1:
        return short_sides[0]
    return short_sides[int(rng.integers(len(short_sides)))]


def round_up(value, divisor):
    """Smallest multiple of divisor that is >= value."""
    return int(-(-int(np.ceil(value)) // divisor) * divisor)


def bucket_shape(height, width, short_bucket, long_bucket, size_divisor=32):
    """The static (Hb, Wb) an image of this size is padded to (SimpleDet's two buckets).

    Landscape images (width >= height) go to (short_bucket, long_bucket), portrait ones to
    (long_bucket, short_bucket); each side is rounded up to a multiple of size_divisor so every
    stride of the backbone divides it.
    """
    short_b, long_b = round_up(short_bucket, size_divisor), round_up(long_bucket, size_divisor)
    return (short_b, long_b) if width >= height else (long_b, short_b)


def is_landscape(height, width):
    return width >= height


def normalize_pad_chw(image, mean, std, shape, out=None):
    """Normalizes an RGB image per channel, pads it with zeros (bottom/right) and goes CHW.

    Fused (one channel at a time, straight into the output) because this is the loader's
    hottest step; equal to pad_chw(to_chw(normalize(image, mean, std)), shape) up to rounding.

    Args:
        image: (h, w, 3) uint8 or float RGB.
        mean, std: 3 values each, RGB order, in the image's pixel units.
        shape: (Hb, Wb) bucket shape, Hb >= h and Wb >= w.
        out: optional (3, Hb, Wb) float32 array to fill (e.g. a slice of the batch array).

    Returns:
        (3, Hb, Wb) float32; the padding is 0, i.e. the mean pixel after normalization.
    """
    height, width = image.shape[:2]
    if height > shape[0] or width > shape[1]:
        raise ValueError(f"image of {height}x{width} does not fit the bucket {shape[0]}x{shape[1]}")
    if out is None:
        out = np.zeros((3, shape[0], shape[1]), dtype=np.float32)
    else:
        out[:, height:, :] = 0
        out[:, :height, width:] = 0
    for channel in range(3):
        view = out[channel, :height, :width]
        np.subtract(image[:, :, channel], mean[channel], out=view, dtype=np.float32)
        np.multiply(view, 1.0 / std[channel], out=view, dtype=np.float32)
    return out


def normalize(image, mean, std):
    """(image - mean) / std per channel; (H, W, 3) -> (H, W, 3) float32."""
    mean = np.asarray(mean, dtype=np.float32).reshape(1, 1, 3)
    std = np.asarray(std, dtype=np.float32).reshape(1, 1, 3)
    return (image.astype(np.float32) - mean) / std


def pad_chw(image_chw, shape, value=0.0):
    """Pads a (C, h, w) array at the bottom/right to (C, Hb, Wb)."""
    channels, height, width = image_chw.shape
    if height > shape[0] or width > shape[1]:
        raise ValueError(f"image of {height}x{width} does not fit the bucket {shape[0]}x{shape[1]}")
    out = np.full((channels, shape[0], shape[1]), value, dtype=np.float32)
    out[:, :height, :width] = image_chw
    return out


def to_chw(image):
    """(H, W, C) -> (C, H, W) float32, contiguous."""
    return np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1))
