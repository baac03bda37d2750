"""Mask geometry for Mask R-CNN: gt polygons packed for the MaskTarget op, RoI-frame mask
probabilities pasted back into the image, and COCO RLE encoding.

Conventions (shared with operator_cxx/mask_target/): boxes are "+1" pixel boxes [x1, y1, x2,
y2] covering the continuous region [x1, x2 + 1) x [y1, y2 + 1), so w = x2 - x1 + 1 (at least 1);
polygons are COCO continuous coordinates (pixel px covers [px, px + 1)). An M x M RoI-frame mask
of box b samples, at cell (i, j), the image point (x1 + (j + 0.5) * w / M, y1 + (i + 0.5) * h / M).

Padded polygon layout, one row of L float32 per gt: ``[P, n_1, x, y, x, y, ... (n_1 points),
n_2, x, y, ..., n_P, ...]`` then -1 up to L. P = number of polygons; a row with P <= 0 has no
polygon (its mask target is ignored); padding rows (no gt) are all -1.
"""
import math

import numpy as np

__all__ = ["encode_polygons", "polygon_encoding_length", "paste_masks", "masks_to_rle"]

MIN_VERTICES = 3


def _polygons(segmentation, where):
    """The polygons of one gt as (n, 2) float32 arrays, dropping those with < 3 vertices; where
    names the gt in errors."""
    if isinstance(segmentation, dict):
        raise TypeError(f"{where} is an RLE dict; expected a list of polygons "
                        f"(pass [] for a gt without polygons: its mask target is ignored)")
    if isinstance(segmentation, (str, bytes)) or not hasattr(segmentation, "__iter__"):
        raise TypeError(f"{where} must be a list of flat [x0, y0, x1, y1, ...] "
                        f"polygons, got {type(segmentation).__name__}")
    out = []
    for k, poly in enumerate(segmentation):
        try:
            flat = np.asarray(poly, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            raise TypeError(f"{where}[{k}] must be a flat list of numbers "
                            f"[x0, y0, x1, y1, ...], got {poly!r:.80}") from None
        if flat.size % 2:
            raise ValueError(f"{where}[{k}] has {flat.size} coordinates; expected "
                             f"an even count [x0, y0, x1, y1, ...]")
        if not np.isfinite(flat).all():
            raise ValueError(f"{where}[{k}] has non-finite coordinates")
        if flat.size >= 2 * MIN_VERTICES:
            out.append(flat.astype(np.float32).reshape(-1, 2))
    return out


def _thin_counts(counts, step):
    """Vertices kept per polygon when keeping every step-th vertex, at least 3 each."""
    return np.maximum(-(-np.asarray(counts) // step), MIN_VERTICES)


def _thin(points, step):
    """Every step-th vertex of points (n, 2) from vertex 0; 3 evenly spread when that is < 3."""
    n = len(points)
    if step == 1:
        return points
    if -(-n // step) >= MIN_VERTICES:
        return points[::step]
    return points[(np.arange(MIN_VERTICES) * n) // MIN_VERTICES]


def polygon_encoding_length(segmentation):
    """Floats one gt's polygons take in the padded layout, without thinning.

    Args:
        segmentation: a list of flat [x0, y0, x1, y1, ...] polygons (lists or arrays).

    Returns:
        ``1 + sum(1 + 2 * n_k)`` over its polygons with at least 3 vertices (1 when none).
    """
    return 1 + sum(1 + 2 * len(p) for p in _polygons(segmentation, "segmentation"))


def encode_polygons(segmentations, max_gt, poly_len):
    """Packs the gt polygons of one image into padded rows for the MaskTarget op.

    Row g holds gt g: ``[P, n_1, x, y, ... (n_1 points), ..., n_P, x, y, ...]`` then -1 up to
    poly_len; rows from len(segmentations) on are all -1 (padding). Polygons with fewer than 3
    vertices cover no area and are dropped; a gt left without polygon (e.g. ``[]``) gets P = 0,
    so its mask target is ignored.

    Thinning: when a gt's encoding would exceed poly_len, each of its polygons keeps only every
    k-th vertex (vertices 0, k, 2k, ...), with the smallest k >= 2 for which the row fits; a
    polygon that would keep fewer than 3 vertices keeps 3 spread evenly (indices
    ``floor(i * n / 3)``, i = 0, 1, 2). Other gts are not thinned.

    Args:
        segmentations: list of at most max_gt entries, one per gt: a list of flat
            [x0, y0, x1, y1, ...] polygons (lists or arrays) in input-image pixels.
        max_gt: rows of the output (G), >= 0.
        poly_len: floats per row (L), >= 1.

    Returns:
        (max_gt, poly_len) float32.

    Raises:
        TypeError: an entry that is not a list of polygons (an RLE dict, say).
        ValueError: more than max_gt entries, an odd coordinate count or non-finite coordinate,
            or a gt whose polygons cannot fit poly_len even at 3 vertices each (the error names
            the gt index and poly_len).
    """
    max_gt, poly_len = int(max_gt), int(poly_len)
    if max_gt < 0 or poly_len < 1:
        raise ValueError(f"max_gt must be >= 0 and poly_len >= 1, got {max_gt} and {poly_len}")
    if len(segmentations) > max_gt:
        raise ValueError(f"{len(segmentations)} segmentations do not fit max_gt = {max_gt} rows")
    out = np.full((max_gt, poly_len), -1, np.float32)
    for g, segmentation in enumerate(segmentations):
        polys = _polygons(segmentation, f"segmentations[{g}]")
        counts = np.array([len(p) for p in polys], np.int64)
        if 1 + int(np.sum(1 + 2 * counts)) > poly_len:
            # Lengths for every step 2..max(n); the last one keeps 3 vertices per polygon.
            steps = np.arange(2, max(int(counts.max()), 2) + 1)
            lengths = 1 + np.sum(1 + 2 * _thin_counts(counts[:, None], steps[None, :]), axis=0)
            fits = np.flatnonzero(lengths <= poly_len)
            if len(fits) == 0:
                raise ValueError(f"gt {g}: its {len(polys)} polygons need "
                                 f"{1 + 7 * len(polys)} floats even at 3 vertices each, more "
                                 f"than poly_len = {poly_len}")
            step = int(steps[fits[0]])
            polys = [_thin(p, step) for p in polys]
        parts = [np.array([len(polys)], np.float32)]
        for p in polys:
            parts += [np.array([len(p)], np.float32), p.ravel()]
        row = np.concatenate(parts)
        out[g, :len(row)] = row
    return out


def _interp_matrix(start, extent, cells, lo, hi):
    """Bilinear weights (hi - lo, cells) sampling a cells-long RoI-frame axis (cell c centred at
    start + (c + 0.5) * extent / cells) at image pixel centres lo + 0.5, ..., hi - 0.5; the ends
    are clamped (edge cells repeat)."""
    pix = np.arange(lo, hi, dtype=np.float64) + 0.5
    s = np.clip((pix - start) * cells / extent - 0.5, 0.0, cells - 1.0)
    left = np.minimum(np.floor(s).astype(np.int64), cells - 1)
    frac = s - left
    right = np.minimum(left + 1, cells - 1)
    weights = np.zeros((len(pix), cells), np.float64)
    rows = np.arange(len(pix))
    np.add.at(weights, (rows, left), 1.0 - frac)
    np.add.at(weights, (rows, right), frac)
    return weights


def _box_span(start, extent, size):
    """Image pixels [lo, hi) whose centres lie in [start, start + extent), clipped to [0, size)."""
    lo = max(math.ceil(start - 0.5), 0)
    hi = min(math.ceil(start + extent - 0.5), size)
    return lo, hi


def paste_masks(masks, boxes, height, width, threshold=0.5):
    """Pastes RoI-frame mask probabilities into full-image binary masks.

    Mask d is in the frame of "+1" box d (the frame the MaskTarget op's targets use): cell (i, j)
    is centred on the image point (x1 + (j + 0.5) * w / M, y1 + (i + 0.5) * h / M). Each image
    pixel whose centre (u + 0.5, v + 0.5) lies in the box region [x1, x1 + w) x [y1, y1 + h)
    takes the mask's bilinear interpolation at that point (edge cells extend to the region's
    border) and is set when it is >= threshold; pixels outside the box, and parts of the box
    outside the image, are 0 / clipped.

    Args:
        masks: (D, M, M) probabilities (any real dtype; (D, Mh, Mw) works too).
        boxes: (D, 4) "+1" boxes [x1, y1, x2, y2] in image pixels.
        height, width: image size.
        threshold: foreground when the interpolated value is >= threshold.

    Returns:
        (D, height, width) uint8 in {0, 1}.
    """
    masks = np.asarray(masks)
    boxes = np.asarray(boxes, np.float64)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (D, M, M), got shape {masks.shape}")
    if boxes.shape != (len(masks), 4):
        raise ValueError(f"boxes must be (D, 4) with D = {len(masks)}, got {boxes.shape}")
    height, width = int(height), int(width)
    if height < 0 or width < 0:
        raise ValueError(f"height and width must be >= 0, got {height} and {width}")
    out = np.zeros((len(masks), height, width), np.uint8)
    cells_y, cells_x = masks.shape[1:]
    for d, (mask, (x1, y1, x2, y2)) in enumerate(zip(masks, boxes)):
        w, h = max(x2 - x1 + 1.0, 1.0), max(y2 - y1 + 1.0, 1.0)
        u0, u1 = _box_span(x1, w, width)
        v0, v1 = _box_span(y1, h, height)
        if u1 <= u0 or v1 <= v0 or cells_x == 0 or cells_y == 0:
            continue
        ax = _interp_matrix(x1, w, cells_x, u0, u1)
        ay = _interp_matrix(y1, h, cells_y, v0, v1)
        values = ay @ mask.astype(np.float64) @ ax.T
        out[d, v0:v1, u0:u1] = values >= threshold
    return out


def masks_to_rle(binary_masks):
    """COCO RLEs of binary masks, json-serialisable.

    Args:
        binary_masks: (D, H, W) array, nonzero = foreground.

    Returns:
        list of D dicts {"size": [H, W], "counts": str} (pycocotools' compressed counts, decoded
        from bytes to str); pycocotools ``mask.decode`` turns each back into the mask.
    """
    from pycocotools import mask as mask_utils

    binary_masks = np.asarray(binary_masks)
    if binary_masks.ndim != 3:
        raise ValueError(f"binary_masks must be (D, H, W), got shape {binary_masks.shape}")
    if len(binary_masks) == 0:
        return []
    rles = []
    # One mask at a time: transposing all D masks into one (H, W, D) Fortran array at once is
    # a cache-hostile copy, ~2.7x slower for 100 masks at 600x800.
    for mask in binary_masks:
        (rle,) = mask_utils.encode(np.asfortranarray((mask != 0).astype(np.uint8)[:, :, None]))
        rle["counts"] = rle["counts"].decode("ascii")
        rles.append(rle)
    return rles
