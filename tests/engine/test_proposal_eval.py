"""Proposal evaluation (COCO AR, class-agnostic, at 100 / 300 / 1000 proposals per image) on
hand cases, the --json payload, the eval_coco.py CLI, and the proposal file round trip."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from simpledet.detectors import FasterRcnn, RpnDetector
from simpledet.engine.evaluation import (
    EVAL_TYPES,
    PROPOSAL_KEYS,
    evaluate_coco,
    evaluate_detections,
)
from simpledet.engine.proposals import (
    NotProposalsError,
    load_proposals,
    require_proposals,
    save_proposals,
)
from simpledet.engine.tester import bbox_json

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# image id -> [(x, y, w, h, category id)]: small (area < 32^2), medium and large objects, two
# categories with json ids 2 and 5 (labels 1 and 2)
OBJECTS = {1: [(5, 6, 20, 14, 2), (40, 30, 60, 50, 5)],
           2: [(10, 10, 200, 180, 5)],
           3: [(70, 20, 25, 40, 5), (100, 80, 12, 18, 2)]}
LABEL_TO_CAT_ID = {1: 2, 2: 5}


@pytest.fixture
def gt():
    annotations = [{"id": k, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                    "area": float(w * h), "iscrowd": 0}
                   for k, (image_id, (x, y, w, h, cat)) in enumerate(
                       ((i, o) for i, objs in OBJECTS.items() for o in objs), 1)]
    return {"images": [{"id": i, "file_name": f"{i}.jpg", "height": 240, "width": 320}
                       for i in OBJECTS],
            "categories": [{"id": 2, "name": "two"}, {"id": 5, "name": "five"}],
            "annotations": annotations}


def proposals(shift=0.0, junk_before=0):
    """Per-image results as the RPN detector gives them (class 1 for every box): the objects
    shifted right by ``shift`` of their width, after ``junk_before`` higher-scored boxes far
    from any object."""
    out = []
    for image_id, objs in OBJECTS.items():
        boxes = [[x + shift * w, y, x + shift * w + w - 1, y + h - 1] for x, y, w, h, _ in objs]
        junk = [[300, 225, 310 + k % 9, 235] for k in range(junk_before)]
        scores = np.linspace(0.99, 0.9, junk_before).tolist() + [0.5] * len(boxes)
        out.append({"image_id": image_id, "boxes": np.array(junk + boxes, np.float32),
                    "scores": np.array(scores, np.float32),
                    "classes": np.ones(len(scores), np.int32)})
    return out


def evaluate(gt, detections, verbose=False):
    return evaluate_detections(gt, detections, LABEL_TO_CAT_ID, ("proposal",),
                               verbose=verbose)["proposal"]


def test_perfect_proposals_recall_everything_whatever_their_class(gt, capsys):
    summary = evaluate(gt, proposals(), verbose=True)
    assert list(summary) == list(PROPOSAL_KEYS)
    for key in PROPOSAL_KEYS:
        assert summary[key] == pytest.approx(1.0), key
    # every proposal is class 1 (category 2): per category, category 5's objects are missed
    bbox = evaluate_detections(gt, proposals(), LABEL_TO_CAT_ID, ("bbox",), verbose=False)
    assert bbox["bbox"]["AR100"] < 0.9
    printed = capsys.readouterr().out
    assert "COCO proposal evaluation (5 boxes, class-agnostic)" in printed
    for max_dets in ("maxDets=100 ", "maxDets=300 ", "maxDets=1000 "):
        assert f"Average Recall     (AR) @[ IoU=0.50:0.95 | area=   all | {max_dets}" in printed
    assert "area= small | maxDets=1000" in printed and "Average Precision" not in printed


def test_shifted_proposals_recall_less(gt):
    # IoU of a box shifted by 20% of its width is 0.8 / 1.2 = 0.667: a match at the IoU
    # thresholds 0.50, 0.55, 0.60, 0.65 of ten, so a recall of 0.4 for every object
    summary = evaluate(gt, proposals(shift=0.2))
    for key in PROPOSAL_KEYS:
        assert summary[key] == pytest.approx(0.4), key
    assert 0 < evaluate(gt, proposals(shift=0.1))["AR100"] < 1


def test_recall_counts_only_the_top_proposals(gt):
    # 150 better-scored junk boxes per image push the objects past the first 100
    summary = evaluate(gt, proposals(junk_before=150))
    assert summary["AR100"] == pytest.approx(0.0)
    assert summary["AR300"] == summary["AR1000"] == pytest.approx(1.0)
    summary = evaluate(gt, proposals(junk_before=99))  # the first object is proposal 100
    assert 0 < summary["AR100"] < 1 and summary["AR300"] == pytest.approx(1.0)


def test_no_proposals_recall_nothing(gt):
    summary = evaluate_coco(gt, [], "proposal", verbose=False)
    assert list(summary) == list(PROPOSAL_KEYS) and all(v == 0 for v in summary.values())


def test_json_payload_has_the_recall_numbers(gt):
    summaries = evaluate_detections(gt, proposals(), LABEL_TO_CAT_ID, ("proposal",),
                                    verbose=False)
    payload = bbox_json(summaries)
    assert list(payload) == ["proposal"]
    assert list(payload["proposal"]) == list(EVAL_TYPES["proposal"].json_keys)
    assert set(PROPOSAL_KEYS[:3]) <= set(payload["proposal"])


def test_eval_coco_cli_scores_proposals(gt, tmp_path):
    gt_file, dt_file, out = tmp_path / "gt.json", tmp_path / "dt.json", tmp_path / "ar.json"
    gt_file.write_text(json.dumps(gt))
    from simpledet.engine.evaluation import detections_to_coco_results

    dt_file.write_text(json.dumps(detections_to_coco_results(proposals(shift=0.2),
                                                             LABEL_TO_CAT_ID)))
    done = subprocess.run([sys.executable, os.path.join(REPO, "scripts", "eval_coco.py"),
                           "--gt", str(gt_file), "--dt", str(dt_file), "--iou-type",
                           "proposal", "--json", str(out)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    metrics = json.loads(out.read_text())["proposal"]
    assert list(metrics) == list(PROPOSAL_KEYS)
    assert metrics["AR1000"] == pytest.approx(0.4)


# --- proposal files ---------------------------------------------------------------------------

def test_proposal_file_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    detections = [
        {"image_id": 42, "boxes": rng.uniform(0, 300, (7, 4)).astype(np.float32),
         "scores": np.sort(rng.uniform(0, 1, 7)).astype(np.float32)[::-1], "classes": None},
        {"image_id": 7, "boxes": np.zeros((0, 4), np.float32),
         "scores": np.zeros((0,), np.float32)},  # no proposal survived
        {"image_id": 1000001, "boxes": rng.uniform(0, 30, (3, 4)), "scores": [0.3, 0.2, 0.1]},
    ]
    path = tmp_path / "sub" / "proposals.npz"
    assert save_proposals(path, detections) == str(path)
    assert [p.name for p in path.parent.iterdir()] == ["proposals.npz"]  # no temp file left
    loaded = load_proposals(path)
    assert list(loaded) == [42, 7, 1000001]  # the loader's order
    for det in detections:
        got = loaded[det["image_id"]]
        assert got["boxes"].dtype == np.float32 and got["scores"].dtype == np.float32
        np.testing.assert_array_equal(got["boxes"],
                                      np.asarray(det["boxes"], np.float32).reshape(-1, 4))
        np.testing.assert_array_equal(got["scores"], np.asarray(det["scores"], np.float32))
    with np.load(path, allow_pickle=False) as raw:  # plain arrays, no pickle needed
        assert sorted(raw.files) == ["boxes", "counts", "image_ids", "scores"]
        assert raw["counts"].tolist() == [7, 0, 3]


def test_proposal_file_errors(tmp_path):
    with pytest.raises(ValueError, match="image 3: 2 boxes but 1 scores"):
        save_proposals(tmp_path / "a.npz", [{"image_id": 3, "boxes": np.zeros((2, 4)),
                                             "scores": [0.5]}])
    with pytest.raises(ValueError, match="appears twice"):
        save_proposals(tmp_path / "a.npz", [{"image_id": 3, "boxes": [], "scores": []}] * 2)
    other = tmp_path / "other.npz"
    np.savez(other, boxes=np.zeros((1, 4)))
    with pytest.raises(ValueError, match="not a proposal file"):
        load_proposals(other)
    broken = tmp_path / "broken.npz"
    np.savez(broken, image_ids=np.array([1]), counts=np.array([3]), boxes=np.zeros((2, 4)),
             scores=np.zeros(2))
    with pytest.raises(ValueError, match="do not match"):
        load_proposals(broken)


def test_only_proposal_detectors_dump_proposals():
    require_proposals(RpnDetector.__new__(RpnDetector))  # eval_types is a class attribute
    with pytest.raises(NotProposalsError, match="FasterRcnn's results are detections"):
        require_proposals(FasterRcnn.__new__(FasterRcnn))
