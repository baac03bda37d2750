"""The tester: mapping detections to original images, the results json, --json, pictures."""
import json
import os

import mxnet as mx
import numpy as np
import pytest
from standin_detector import StandInDetector, tiny_config, write_tiny_coco

from simpledet.detectors.base import detections_to_original
from simpledet.engine.build import build_dataset, build_train_loader
from simpledet.engine.checkpoint import CheckpointError
from simpledet.engine.hooks import CheckpointHook
from simpledet.engine.tester import JSON_KEYS, run_test
from simpledet.engine.trainer import build_trainer


def test_boxes_are_mapped_back_by_the_scale_and_clipped():
    dets = np.array([[[10, 20, 50, 60, 0.9, 2],
                      [-4, 8, 400, 90, 0.5, 1],   # crosses the left and right borders
                      [-1, -1, -1, -1, -1, -1]]], dtype=np.float32)
    im_info = np.array([[100, 200, 2.0]], dtype=np.float32)
    (out,) = detections_to_original(dets, im_info, [(50, 100)])
    # "+1" boxes: x1 / s, (x2 + 1) / s - 1 (pixels 10..50 of the input are 5..24.5)
    np.testing.assert_allclose(out["boxes"], [[5, 10, 24.5, 29.5], [0, 4, 99, 44.5]])
    np.testing.assert_allclose(out["scores"], [0.9, 0.5])
    assert out["classes"].tolist() == [2, 1] and out["classes"].dtype == np.int32


def test_empty_and_per_image_scales():
    dets = np.full((2, 2, 6), -1, dtype=np.float32)
    dets[1, 0] = [30, 30, 60, 45, 0.7, 1]
    im_info = np.array([[64, 64, 0.5], [90, 120, 1.5]], dtype=np.float32)
    first, second = detections_to_original(dets, im_info, [(128, 128), (60, 80)])
    assert first["boxes"].shape == (0, 4) and first["classes"].shape == (0,)
    np.testing.assert_allclose(second["boxes"], [[20, 20, 61 / 1.5 - 1, 46 / 1.5 - 1]],
                               rtol=1e-6)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("tester")
    write_tiny_coco(str(root), "train", [(40, 56), (56, 40), (30, 44), (44, 60)])
    write_tiny_coco(str(root), "val", [(40, 56), (56, 40), (30, 44)])
    cfg = tiny_config(root)
    detector = StandInDetector(cfg)
    loader = build_train_loader(cfg, build_dataset(cfg, "train", True).records, detector)
    build_trainer(cfg, detector, loader, [mx.cpu(0)], max_iter=2,
                  hooks=[CheckpointHook(100)]).train()
    return cfg


def test_run_test_writes_results_json_and_ap(trained, tmp_path):
    cfg = trained
    out = tmp_path / "metrics.json"
    summaries = run_test(cfg, StandInDetector(cfg), [mx.cpu(0)], json_out=str(out), vis=2,
                         num_workers=0)
    payload = json.loads(out.read_text())
    assert list(payload) == ["bbox"] and list(payload["bbox"]) == list(JSON_KEYS)
    assert payload["bbox"]["AP"] == pytest.approx(summaries["bbox"]["AP"])
    assert 0 <= payload["bbox"]["AP"] <= 1

    results_file = os.path.join(cfg.experiment_dir, "results_iter_0000002_bbox.json")
    with open(results_file) as f:
        results = json.load(f)
    dataset = build_dataset(cfg, "val", for_training=False)
    assert sorted(r["image_id"] for r in results) == sorted(r["image_id"] for r
                                                            in dataset.records)
    sizes = {r["image_id"]: (r["height"], r["width"]) for r in dataset.records}
    for r in results:
        height, width = sizes[r["image_id"]]
        x, y, w, h = r["bbox"]
        # the stand-in predicts [0.1 W, 0.1 H, 0.5 W, 0.5 H] of the network input; mapped
        # back it is the same fraction of the original image (up to resize rounding)
        assert x == pytest.approx(0.1 * width, abs=0.3)
        assert y == pytest.approx(0.1 * height, abs=0.3)
        assert x + w - 1 == pytest.approx(0.5 * width, abs=1.0)
        assert y + h - 1 == pytest.approx(0.5 * height, abs=1.0)
        assert r["category_id"] == 1 and r["score"] == pytest.approx(0.9)
    pictures = os.listdir(os.path.join(cfg.experiment_dir, "vis", "iter_0000002"))
    assert len(pictures) == 2 and all(p.endswith(".png") for p in pictures)


def test_unknown_iteration_is_a_clear_error(trained):
    with pytest.raises(CheckpointError, match=r"no checkpoint for iteration 5 .*available: "
                                              r"\[2\]"):
        run_test(trained, StandInDetector(trained), [mx.cpu(0)], iteration=5, num_workers=0)
