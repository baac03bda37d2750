"""Bad data through the real CLIs: one error line naming the file and the record (no Python
traceback unless ``--debug``), a counted skip with ``input.skip_bad_images=true``, and
degenerate boxes dropped with a warning that names them."""
import os
import re

import pytest
from reliability_cli import (
    assert_one_line_error,
    experiment_dir,
    run_cli,
    train_args,
    write_dataset,
    write_json,
)

BAD_IMAGE_ID = 2


def damage_image(image_dir, content, how, image_id=BAD_IMAGE_ID):
    """Makes one image corrupt, truncated or missing; returns its path."""
    name = next(i["file_name"] for i in content["images"] if i["id"] == image_id)
    path = os.path.join(image_dir, name)
    if how == "corrupt":
        with open(path, "wb") as f:
            f.write(b"\xff\xd8 not a JPEG at all" * 10 + b"\xff\xd9")
    elif how == "truncated":
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[:len(data) // 2])
    else:
        os.remove(path)
    return path


IMAGE_CASES = {"corrupt": "cannot decode image", "truncated": "truncated JPEG",
               "missing": "image file not found"}


@pytest.mark.parametrize("how", sorted(IMAGE_CASES))
def test_bad_image_is_one_error_line(tmp_path, how):
    _, image_dir, content = write_dataset(str(tmp_path / "data"))
    path = damage_image(image_dir, content, how)
    proc = run_cli("detection_train.py", train_args(tmp_path / "data", tmp_path / "out"),
                   cwd=tmp_path)
    assert_one_line_error(proc, path, f"image_id {BAD_IMAGE_ID}", IMAGE_CASES[how])


def test_debug_shows_the_tracebacks(tmp_path):
    _, image_dir, content = write_dataset(str(tmp_path / "data"))
    path = damage_image(image_dir, content, "corrupt")
    proc = run_cli("detection_train.py",
                   train_args(tmp_path / "data", tmp_path / "out") + ["--debug"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback (most recent call last)" in proc.stderr
    assert "loader worker 0 traceback" in proc.stderr  # where the image was read
    assert f"error: {path}" in proc.stderr


def test_skip_bad_images_counts_and_trains_on(tmp_path):
    _, image_dir, content = write_dataset(str(tmp_path / "data"), count=6)
    paths = [damage_image(image_dir, content, how, image_id)
             for image_id, how in zip((2, 3, 5), ("corrupt", "truncated", "missing"))]
    proc = run_cli("detection_train.py", train_args(tmp_path / "data", tmp_path / "out",
                                                    "input.skip_bad_images=true")
                   + ["--max-iter", "12"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    # One warning per unreadable image (not one per epoch), and a count at the end.
    for path, reason in zip(paths, ("cannot decode", "truncated JPEG", "image file not found")):
        warnings = [line for line in proc.stdout.splitlines()
                    if "skipped unreadable image" in line and path in line]
        assert len(warnings) == 1 and reason in warnings[0], proc.stdout
    summary = re.search(r"skipped (\d+) unreadable image\(s\) \(input.skip_bad_images\)",
                        proc.stdout)
    assert summary and summary[1] == "3", proc.stdout[-3000:]
    assert "done: 12 iterations" in proc.stdout


def test_degenerate_boxes_are_dropped_with_a_warning_naming_them(tmp_path):
    ann_file, _, content = write_dataset(str(tmp_path / "data"))
    outside, zero_area = content["annotations"][0], content["annotations"][2]
    outside["bbox"] = [500.0, 400.0, 20.0, 20.0]  # the image is 80x64
    zero_area["bbox"] = [10.0, 10.0, 0.0, 12.0]
    write_json(ann_file, content)
    proc = run_cli("detection_train.py", train_args(tmp_path / "data", tmp_path / "out")
                   + ["--max-iter", "2"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(experiment_dir(tmp_path / "out"), "train.log")) as f:
        log = f.read()
    warning = re.search(r" W (\S+): dropped 2 degenerate box\(es\) .*annotation ids e\.g\. "
                        r"\[(.*)\] in image ids \[(.*)\]", log)
    assert warning and warning[1] == ann_file, log
    assert warning[2] == f"{outside['id']}, {zero_area['id']}"
    assert warning[3] == f"{outside['image_id']}, {zero_area['image_id']}"


def annotation_damage(case):
    def unknown_category(content):
        content["annotations"][1]["category_id"] = 99
        return content

    return {
        "malformed": (lambda text: text[:len(text) // 2], "malformed annotation file"),
        "empty": (lambda text: "", "annotation file is empty"),
        "no_images": (lambda content: dict(content, images=[], annotations=[]),
                      "has no images"),
        "unknown_category": (unknown_category, "category_id 99 is not in 'categories'"),
    }[case]


@pytest.mark.parametrize("case", ["malformed", "empty", "no_images", "unknown_category"])
def test_bad_annotation_file_is_one_error_line(tmp_path, case):
    ann_file, _, content = write_dataset(str(tmp_path / "data"))
    damage, message = annotation_damage(case)
    if case in ("malformed", "empty"):
        with open(ann_file) as f:
            text = damage(f.read())
        with open(ann_file, "w") as f:
            f.write(text)
    else:
        write_json(ann_file, damage(content))
    proc = run_cli("detection_train.py", train_args(tmp_path / "data", tmp_path / "out"),
                   cwd=tmp_path)
    line = assert_one_line_error(proc, ann_file, message)
    if case == "unknown_category":
        ann = content["annotations"][1]
        assert f"(id {ann['id']})" in line and f"image_id {ann['image_id']}" in line


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 4-iteration experiment and the root of its data (train and val)."""
    root = tmp_path_factory.mktemp("trained")
    write_dataset(str(root / "data"))
    proc = run_cli("detection_train.py", train_args(root / "data", root / "out")
                   + ["--max-iter", "4"], cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


@pytest.mark.parametrize("skip", [False, True])
def test_test_cli_on_a_corrupt_val_image(trained, tmp_path, skip):
    _, image_dir, content = write_dataset(str(tmp_path / "data"), "val", count=3, seed=1)
    path = damage_image(image_dir, content, "corrupt")
    extra = ["input.skip_bad_images=true"] if skip else []
    proc = run_cli("detection_test.py", train_args(tmp_path / "data", trained / "out", *extra),
                   cwd=tmp_path)
    if not skip:
        assert_one_line_error(proc, path, f"image_id {BAD_IMAGE_ID}", "cannot decode image")
        return
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert re.search(rf"skipped unreadable image {re.escape(path)}", proc.stdout)
    assert re.search(r"1 unreadable image\(s\) skipped .*counts? as missed", proc.stdout), \
        proc.stdout[-2000:]
    assert "Average Precision" in proc.stdout
