"""Proposal files: every test image's proposals in original-image pixels, for a later stage or
an offline look (``detection_test.py --dump-proposals FILE``).

Format: one NumPy ``.npz`` (no pickle, ``np.load`` reads it) with four arrays, images in the
test loader's order:

- ``image_ids`` (M,) int64: the annotation file's image ids;
- ``counts`` (M,) int64: proposals of each image (image i owns rows
  ``sum(counts[:i]) .. sum(counts[:i + 1]) - 1`` of the next two);
- ``boxes`` (sum(counts), 4) float32: [x1, y1, x2, y2] "+1" boxes in original-image pixels
  (the tester's result boxes: simpledet.detectors.base.detections_to_original), by descending
  score within an image;
- ``scores`` (sum(counts),) float32: the RPN's foreground probabilities.

:func:`load_proposals` gives back ``{image_id: {"boxes", "scores"}}``.
"""
import os
import tempfile

import numpy as np

__all__ = ["NotProposalsError", "load_proposals", "require_proposals", "save_proposals"]


class NotProposalsError(ValueError):
    """Proposals were asked of a detector whose results are not proposals."""


def require_proposals(detector):
    """Raises NotProposalsError unless the detector's results are proposals ('proposal' in its
    ``eval_types``, e.g. simpledet.detectors.rpn.RpnDetector).

    Args:
        detector: a Detector or a Detector class (a config's ``detector_class``).
    """
    cls = detector if isinstance(detector, type) else type(detector)
    if "proposal" not in detector.eval_types:
        raise NotProposalsError(
            f"{cls.__name__}'s results are detections, not proposals (its "
            f"evaluations are {tuple(detector.eval_types)}); dump proposals with an RPN-only "
            f"config (e.g. config/rpn_r50v1_fpn_1x.py)")


def save_proposals(path, detections):
    """Writes per-image proposals to an .npz file, atomically (temp file + rename).

    Args:
        path: the file (written as given; '.npz' is not appended).
        detections: per-image dicts {"image_id", "boxes" (N, 4), "scores" (N,)} in original
            pixels (the tester's results).

    Returns:
        the absolute path written.
    """
    path = os.path.abspath(str(path))
    image_ids, counts, boxes, scores = [], [], [], []
    for det in detections:
        image_boxes = np.asarray(det["boxes"], np.float32).reshape(-1, 4)
        image_scores = np.asarray(det["scores"], np.float32).reshape(-1)
        if len(image_boxes) != len(image_scores):
            raise ValueError(f"image {det['image_id']}: {len(image_boxes)} boxes but "
                             f"{len(image_scores)} scores")
        image_ids.append(int(det["image_id"]))
        counts.append(len(image_boxes))
        boxes.append(image_boxes)
        scores.append(image_scores)
    if len(set(image_ids)) != len(image_ids):
        raise ValueError("an image id appears twice in the proposals")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".proposals-", suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, image_ids=np.asarray(image_ids, np.int64),
                 counts=np.asarray(counts, np.int64),
                 boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
                 scores=np.concatenate(scores) if scores else np.zeros((0,), np.float32))
    os.replace(tmp, path)
    return path


def load_proposals(path):
    """Reads a file of :func:`save_proposals`.

    Returns:
        {image_id: {"boxes": (N, 4) float32, "scores": (N,) float32}}, in the file's order.

    Raises:
        ValueError: the file lacks an array or its counts do not add up.
    """
    with np.load(path, allow_pickle=False) as data:
        missing = {"image_ids", "counts", "boxes", "scores"} - set(data.files)
        if missing:
            raise ValueError(f"{path}: not a proposal file, it lacks {sorted(missing)}")
        image_ids, counts = data["image_ids"], data["counts"]
        boxes, scores = data["boxes"], data["scores"]
    if len(image_ids) != len(counts) or int(counts.sum()) != len(boxes) or \
            len(boxes) != len(scores):
        raise ValueError(f"{path}: {len(image_ids)} image ids, {len(counts)} counts summing to "
                         f"{int(counts.sum())}, {len(boxes)} boxes and {len(scores)} scores "
                         f"do not match")
    ends = np.cumsum(counts)
    starts = ends - counts
    return {int(i): {"boxes": boxes[a:b], "scores": scores[a:b]}
            for i, a, b in zip(image_ids, starts, ends)}
