"""scripts/demo.py end to end through the real CLI (subprocess), on a shapes image and on
arbitrary pictures written here (a portrait JPEG of odd size, a tiny grey PNG).

No training: the checkpoints hold the engine's initialised weights (GraphModule.init_params
with the detector's initializer) with the class-1 logit bias raised, so every detection is a
confident 'circle' and the default threshold (0.5) has something to show. Mask R-CNN runs
from an experiment folder (saved config + latest checkpoint, found as detection_test.py finds
them), RetinaNet from a --params file. A missing or corrupt image is one error line naming
the file, before any model is built (bad parameter files: tests/engine/test_inference.py).
About 15 s on 2 cores.
"""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "scripts" / "demo.py"
SMALL = ["input.short=64", "input.long=80", "test.images_per_device=1", "test.max_det=4"]
LINE = re.compile(r"^  (\d\.\d{3})  \[([-\d.]+), ([-\d.]+), ([-\d.]+), ([-\d.]+)\]  (.+)$")
HEADER = re.compile(r"^(.+) \((\d+)x(\d+)\): (\d+) detections with score >= ([\d.]+) -> (.+)$")


def initialised_params(cfg, class1_bias=6.0):
    """The test graph's parameters as the engine initialises them, the class-1 logit raised."""
    import mxnet as mx

    from simpledet.engine.build import build_detector
    from simpledet.engine.module import GraphModule, to_data_batch

    detector = build_detector(cfg)
    shapes = detector.test_data_shapes(1, 64, 96)
    module = GraphModule(detector.get_test_symbol(), detector.test_data_names, [mx.cpu()],
                         for_training=False)
    batch = {name: np.zeros(shape, np.float32) for name, shape in shapes.items()}
    batch["im_info"][:] = (64, 80, 1.0)
    module.bind(to_data_batch(batch, detector.test_data_names))
    module.init_params(detector.initializer())
    arg_params, aux_params = module.get_params()
    num_classes = len(cfg.dataset.class_names)
    raised = 0
    for name in list(arg_params):
        # softmax heads (every cascade stage): [background, class 1, ...]; RetinaNet's sigmoid
        # logits: anchor a's classes at a * C + c
        softmax = re.fullmatch(r"bbox_cls_logit(_\w+)?_bias", name)
        if softmax or name == "retina_cls_logit_bias":
            bias = arg_params[name].asnumpy()
            view = bias.reshape(-1, num_classes + 1 if softmax else num_classes)
            view[:, 1 if softmax else 0] = class1_bias
            arg_params[name] = mx.nd.array(bias)
            raised += 1
    assert raised, "no classification bias found"
    return arg_params, aux_params


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from simpledet.config import load_config
    from simpledet.config.loader import dump_config
    from simpledet.data.shapes import render_image
    from simpledet.engine.checkpoint import save_checkpoint, save_params

    root = tmp_path_factory.mktemp("demo")
    experiments = root / "experiments"
    mask_sets = SMALL + [f"output_root={experiments}", "name=demo_mask"]
    mask_cfg = load_config(str(REPO / "config" / "shapes" / "mask_fpn.py"), mask_sets)
    dump_config(mask_cfg, mask_cfg.experiment_dir)
    arg_params, aux_params = initialised_params(mask_cfg)
    save_checkpoint(mask_cfg.experiment_dir, 3, arg_params, aux_params, state={})

    retina_cfg = load_config(str(REPO / "config" / "shapes" / "retina_fpn.py"), SMALL)
    retina_params = root / "retina.params"
    save_params(retina_params, *initialised_params(retina_cfg))

    images = root / "images"
    images.mkdir()
    shapes, _ = render_image(np.random.default_rng(5), 256, 320)  # BGR
    cv2.imwrite(str(images / "shapes.png"), shapes)
    portrait = np.zeros((203, 131, 3), np.uint8)
    portrait[:] = np.linspace(30, 220, 131, dtype=np.uint8)[None, :, None]
    cv2.circle(portrait, (60, 60), 30, (40, 40, 230), -1)
    cv2.rectangle(portrait, (20, 120), (100, 180), (230, 200, 30), -1)
    cv2.imwrite(str(images / "photo.jpg"), portrait, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(images / "tiny.png"), np.full((30, 45), 200, np.uint8))  # greyscale
    (images / "again").mkdir()
    cv2.imwrite(str(images / "again" / "shapes.png"), shapes[::2, ::2])  # a name met twice
    (images / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 these bytes are no JPEG \xff\xd9")
    return {"root": root, "mask_sets": ["output_root=" + str(experiments), "name=demo_mask"],
            "retina_params": retina_params, "images": images}


def demo(*args, config="mask_fpn.py"):
    return subprocess.run(
        [sys.executable, str(DEMO), "--config", str(REPO / "config" / "shapes" / config),
         *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS="1"))


def parse(stdout):
    """{image path: (height, width, picture, [(score, box, class)])} of the printed lines."""
    found, current = {}, None
    for line in stdout.splitlines():
        header, row = HEADER.match(line), LINE.match(line)
        if header:
            image, height, width, count, _, picture = header.groups()
            current = found[image] = (int(height), int(width), picture, [])
            expected = int(count)
        elif row:
            score, *box, name = row.groups()
            current[3].append((float(score), [float(v) for v in box], name))
    if current is not None:
        assert len(current[3]) == expected
    return found


def check_printed(found, image, size, score=0.5):
    height, width, picture, rows = found[str(image)]
    assert (height, width) == size
    assert 1 <= len(rows) <= 4, rows  # test.max_det=4 (the config file says 100)
    scores = [r[0] for r in rows]
    assert scores == sorted(scores, reverse=True) and min(scores) >= score
    assert {r[2] for r in rows} == {"circle"}  # the raised class-1 logit
    for _, (x1, y1, x2, y2), _ in rows:
        assert 0 <= x1 <= x2 <= width - 1 and 0 <= y1 <= y2 <= height - 1
    return picture


def test_mask_demo_from_the_experiment_draws_and_prints(setup, tmp_path):
    from simpledet.utils.draw import class_color

    images = setup["images"]
    inputs = [images / "shapes.png", images / "photo.jpg", images / "tiny.png",
              images / "again" / "shapes.png"]
    out, report = tmp_path / "pictures", tmp_path / "detections.json"
    proc = demo(*inputs, "--out", out, "--json", report, "--set", *setup["mask_sets"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    # the experiment's saved config (64x80 input, max_det 4) and its latest checkpoint
    assert "using the experiment's saved config" in proc.stdout
    assert "iter_0000003 (iteration 3)" in proc.stdout
    found = parse(proc.stdout)
    # 256x320 -> 512x640; 203x131 portrait -> 640x413; 30x45 -> 427x640; 128x160 -> 512x640
    for image, size, drawn, name in ((inputs[0], (256, 320), (512, 640), "shapes.png"),
                                     (inputs[1], (203, 131), (640, 413), "photo.png"),
                                     (inputs[2], (30, 45), (427, 640), "tiny.png"),
                                     (inputs[3], (128, 160), (512, 640), "shapes_2.png")):
        picture = check_printed(found, image, size)
        assert picture == str(out / name)
        pixels = cv2.imread(picture)
        assert pixels is not None and pixels.shape == (*drawn, 3)
        # boxes, labels and masks in the circle colour
        assert np.all(pixels == class_color(1), axis=2).sum() > 500
    payload = json.loads(report.read_text())
    assert [p["image"] for p in payload] == [str(i) for i in inputs]
    for entry in payload:
        rows = found[entry["image"]][3]
        assert [(d["score"], d["class"]) for d in entry["detections"]] == [
            (pytest.approx(s, abs=5e-4), n) for s, _, n in rows]


def test_retina_demo_with_a_params_file(setup, tmp_path):
    image = setup["images"] / "photo.jpg"
    proc = demo(image, "--params", setup["retina_params"], "--out", tmp_path, "--score", "0.9",
                "--set", *SMALL, f"output_root={tmp_path / 'none'}", config="retina_fpn.py")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"parameters: {setup['retina_params']}" in proc.stdout
    picture = check_printed(parse(proc.stdout), image, (203, 131), score=0.9)
    assert cv2.imread(picture).shape == (640, 413, 3)


def test_bad_images_are_one_line_each_naming_the_file(setup, tmp_path):
    images = setup["images"]
    missing, corrupt = images / "nope.jpg", images / "corrupt.jpg"
    proc = demo(images / "shapes.png", missing, corrupt, "--out", tmp_path / "out", "--set",
                *setup["mask_sets"])
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip()]
    assert errors == [f"error: {missing}: image file not found",
                      f"error: {corrupt}: cannot decode image (corrupt file or unsupported "
                      "format)"], proc.stderr
    assert not (tmp_path / "out").exists()  # stopped before the model: nothing written


@pytest.mark.slow
@pytest.mark.parametrize("config", ["faster_fpn.py", "faster_c4.py", "cascade_fpn.py"])
def test_other_families_with_a_params_file(setup, tmp_path, config):
    from simpledet.config import load_config
    from simpledet.engine.checkpoint import save_params

    params = tmp_path / "model.params"
    cfg = load_config(str(REPO / "config" / "shapes" / config), SMALL)
    save_params(params, *initialised_params(cfg))
    image = setup["images"] / "shapes.png"
    proc = demo(image, "--params", params, "--out", tmp_path, "--set", *SMALL,
                f"output_root={tmp_path / 'none'}", config=config)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    picture = check_printed(parse(proc.stdout), image, (256, 320))
    assert cv2.imread(picture).shape == (512, 640, 3)
