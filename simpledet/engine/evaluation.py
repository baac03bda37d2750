"""COCO evaluation: detections -> COCO results json -> pycocotools COCOeval -> 12 numbers.

Detections, per image, as the tester produces them::

    {"image_id": int,
     "boxes": float (N, 4) [x1, y1, x2, y2] in original image pixels, "+1" convention,
     "scores": float (N,),
     "classes": int (N,) contiguous labels 1..K,
     "masks": optional, uint8/bool (N, H, W) full-image binary masks or a list of N RLE dicts}

COCO results use [x, y, w, h] with w = x2 - x1 + 1, the json's original category ids, and
compressed RLE (``pycocotools.mask.encode``) with ``counts`` as a str for masks.

The evaluations (a detector's ``eval_types``) are the entries of :data:`EVAL_TYPES`, each a
COCOeval setting and the numbers it reports: 'bbox' and 'segm' (AP per category, the 12-number
summary) and 'proposal' (class-agnostic box recall of proposals, ``useCats = 0``, at 100, 300
and 1000 proposals per image: AR100, AR300, AR1000 and ARs1000 / ARm1000 / ARl1000 by area).
"""
import contextlib
import copy
import io
import json
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from simpledet.core.masks import masks_to_rle
from simpledet.data.coco import DatasetError, load_json

# Order of COCOeval.stats.
SUMMARY_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl",
                "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@dataclass(frozen=True)
class EvalType:
    """One COCO evaluation of per-image results.

    Attributes:
        iou_type: COCOeval's iouType, 'bbox' or 'segm'.
        use_cats: COCOeval ``params.useCats``; False matches boxes of any category (proposals).
        max_dets: COCOeval ``params.maxDets`` (3 values): AR is reported at each, AP and the
            per-area numbers at the last (COCOeval.summarize).
        summary: (key, index into COCOeval.stats) of the numbers returned, in order.
        json_keys: the headline numbers (detection_test.py --json).
    """

    iou_type: str
    use_cats: bool
    max_dets: tuple
    summary: tuple
    json_keys: tuple


_DETECTION_SUMMARY = tuple((key, i) for i, key in enumerate(SUMMARY_KEYS))
_AP_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
PROPOSAL_MAX_DETS = (100, 300, 1000)
PROPOSAL_KEYS = ("AR100", "AR300", "AR1000", "ARs1000", "ARm1000", "ARl1000")
EVAL_TYPES = {
    "bbox": EvalType("bbox", True, (1, 10, 100), _DETECTION_SUMMARY, _AP_KEYS),
    "segm": EvalType("segm", True, (1, 10, 100), _DETECTION_SUMMARY, _AP_KEYS),
    # COCOeval.stats[6:12] with maxDets (100, 300, 1000): AR at each, then by area at 1000
    "proposal": EvalType("bbox", False, PROPOSAL_MAX_DETS,
                         tuple(zip(PROPOSAL_KEYS, range(6, 12))), PROPOSAL_KEYS),
}
IOU_TYPES = tuple(EVAL_TYPES)


def detections_to_coco_results(detections, label_to_cat_id):
    """Converts per-image detections (module docstring) to COCO result dicts.

    Args:
        detections: iterable of per-image dicts.
        label_to_cat_id: contiguous label -> json category id (``CocoDataset.label_to_cat_id``).

    Returns:
        list of {"image_id", "category_id", "bbox": [x, y, w, h], "score"} (+ "segmentation").
    """
    results = []
    for det in detections:
        boxes = np.asarray(det["boxes"], np.float64).reshape(-1, 4)
        scores = np.asarray(det["scores"], np.float64).reshape(-1)
        classes = np.asarray(det["classes"]).reshape(-1)
        if not len(boxes) == len(scores) == len(classes):
            raise ValueError(f"image {det['image_id']}: boxes {boxes.shape}, scores "
                             f"{scores.shape} and classes {classes.shape} differ in length")
        rles = None
        if det.get("masks") is not None:
            rles = _masks_to_rles(det["masks"], len(boxes), det["image_id"])
        for i, (box, score, label) in enumerate(zip(boxes, scores, classes)):
            if int(label) not in label_to_cat_id:
                raise ValueError(f"image {det['image_id']}: label {int(label)} has no category "
                                 f"id (known labels 1..{len(label_to_cat_id)})")
            x1, y1, x2, y2 = (float(v) for v in box)
            result = {"image_id": int(det["image_id"]),
                      "category_id": int(label_to_cat_id[int(label)]),
                      "bbox": [round(x1, 2), round(y1, 2),
                               round(x2 - x1 + 1, 2), round(y2 - y1 + 1, 2)],
                      "score": round(float(score), 5)}
            if rles is not None:
                result["segmentation"] = rles[i]
            results.append(result)
    return results


def _masks_to_rles(masks, count, image_id):
    if isinstance(masks, (list, tuple)) and (not masks or isinstance(masks[0], dict)):
        rles = [dict(m) for m in masks]
        for rle in rles:
            if isinstance(rle["counts"], bytes):
                rle["counts"] = rle["counts"].decode("ascii")  # json needs str
    else:
        masks = np.asarray(masks, dtype=np.uint8)
        if masks.ndim != 3:
            raise ValueError(f"image {image_id}: masks must be (N, H, W), got {masks.shape}")
        rles = masks_to_rle(masks)
    if len(rles) != count:
        raise ValueError(f"image {image_id}: {len(rles)} masks for {count} boxes")
    return rles


def write_results_json(results, path):
    """Writes COCO results atomically (temp file + rename)."""
    path = os.path.abspath(str(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".results-", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(results, f)
    os.replace(tmp, path)
    return path


def load_coco_gt(gt):
    """A pycocotools COCO from a path, a parsed json dict or a COCO object (returned as is)."""
    from pycocotools.coco import COCO

    if isinstance(gt, COCO):
        return gt
    name = "ground-truth dict"
    if isinstance(gt, (str, os.PathLike)):
        name = str(gt)
        gt = load_json(gt, "ground-truth annotation file")
    if not isinstance(gt, dict) or not isinstance(gt.get("images"), list) \
            or not isinstance(gt.get("categories"), list):
        raise DatasetError(f"{name}: expected a COCO annotation object with 'images', "
                           f"'annotations' and 'categories' lists")
    gt = dict(gt, annotations=gt.get("annotations", []))
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_results(results, name="results"):
    """A list of COCO result dicts from a list or a json path (DatasetError naming the file)."""
    if isinstance(results, (str, os.PathLike)):
        name = str(results)
        results = load_json(results, "results file")
    if not isinstance(results, list):
        raise DatasetError(f"{name}: expected a JSON list of detections ({{image_id, "
                           f"category_id, bbox, score}}), got {type(results).__name__}")
    for i, r in enumerate(results):
        if not isinstance(r, dict) or not {"image_id", "category_id", "score"} <= r.keys() \
                or not ({"bbox", "segmentation"} & r.keys()):
            raise DatasetError(f"{name}: results[{i}] must be an object with image_id, "
                               f"category_id, score and bbox or segmentation; got {r!r:.200}")
    return results


def _results_to_coco(coco_gt, results, iou_type, name):
    from pycocotools.coco import COCO

    if not results:
        # COCO.loadRes fails on []: an empty result set evaluates to AP 0.
        coco_dt = COCO()
        coco_dt.dataset = {"images": list(coco_gt.dataset["images"]),
                           "categories": copy.deepcopy(coco_gt.dataset["categories"]),
                           "annotations": []}
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt.createIndex()
        return coco_dt
    key = "bbox" if iou_type == "bbox" else "segmentation"
    missing = [i for i, r in enumerate(results) if key not in r]
    if missing:
        raise DatasetError(f"{name}: {iou_type} evaluation needs '{key}' in every result; "
                           f"results[{missing[0]}] has none ({len(missing)} in all)")
    known = set(coco_gt.getImgIds())
    unknown = sorted({r["image_id"] for r in results} - known)
    if unknown:
        raise DatasetError(f"{name}: image ids {unknown[:5]} ({len(unknown)} in all) are not in "
                           f"the ground truth")
    with contextlib.redirect_stdout(io.StringIO()):
        # loadRes annotates the dicts in place (id, area): give it copies.
        return coco_gt.loadRes(copy.deepcopy(results))


def evaluate_coco(gt, results, iou_type="bbox", *, image_ids=None, verbose=True):
    """Runs COCOeval and returns its summary.

    Args:
        gt: ground truth: json path, parsed dict or pycocotools COCO.
        results: COCO result dicts (list) or a results json path; may be empty.
        iou_type: an evaluation of :data:`EVAL_TYPES`: "bbox", "segm" or "proposal".
        image_ids: evaluate on these images only (default: every ground-truth image).
        verbose: print COCOeval's summary table (the lines of the returned numbers).

    Returns:
        dict key -> float, keys as the evaluation's ``summary`` (SUMMARY_KEYS for bbox and
        segm, PROPOSAL_KEYS for proposal). COCOeval's -1 (no ground truth in that area range)
        is kept.
    """
    from pycocotools.cocoeval import COCOeval

    if iou_type not in EVAL_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    spec = EVAL_TYPES[iou_type]
    name = str(results) if isinstance(results, (str, os.PathLike)) else "results"
    coco_gt = load_coco_gt(gt)
    results = load_results(results, name)
    coco_dt = _results_to_coco(coco_gt, results, spec.iou_type, name)
    evaluator = COCOeval(coco_gt, coco_dt, spec.iou_type)
    evaluator.params.useCats = int(spec.use_cats)
    evaluator.params.maxDets = list(spec.max_dets)
    if image_ids is not None:
        evaluator.params.imgIds = sorted(int(i) for i in image_ids)
    with contextlib.redirect_stdout(io.StringIO()):  # per-step timing chatter
        evaluator.evaluate()
        evaluator.accumulate()
    table = io.StringIO()
    with contextlib.redirect_stdout(table):
        evaluator.summarize()
    if verbose:
        lines = table.getvalue().splitlines()
        what = "detections" if spec.use_cats else "boxes, class-agnostic"
        print(f"COCO {iou_type} evaluation ({len(results)} {what}):")
        print("".join(lines[i] + "\n" for _, i in spec.summary), end="")
    return {key: float(evaluator.stats[i]) for key, i in spec.summary}


def evaluate_detections(gt, detections, label_to_cat_id, iou_types=("bbox",), *,
                        results_file=None, image_ids=None, verbose=True):
    """Converts per-image detections, optionally writes the results json, evaluates.

    Args:
        gt: ground truth (path, dict or COCO).
        detections: per-image dicts (module docstring); masks needed for "segm".
        label_to_cat_id: contiguous label -> category id.
        iou_types: evaluations of :data:`EVAL_TYPES` ("bbox", "segm", "proposal").
        results_file: where to write the COCO results json (optional).
        image_ids: images to evaluate on (default: all ground-truth images).
        verbose: print the summaries.

    Returns:
        {iou_type: {summary key: float}} (see :func:`evaluate_coco`).
    """
    results = detections_to_coco_results(detections, label_to_cat_id)
    if results_file is not None:
        write_results_json(results, results_file)
    coco_gt = load_coco_gt(gt)
    return {t: evaluate_coco(coco_gt, results, t, image_ids=image_ids, verbose=verbose)
            for t in iou_types}
