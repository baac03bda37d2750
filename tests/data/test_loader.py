"""DetectionLoader: batch contents, determinism, sharding, resume, errors, worker lifetime."""
import functools
import os
import signal
import time

import cv2
import numpy as np
import pytest

from simpledet.data.anchor_target import feature_levels
from simpledet.data.loader import DetectionLoader, LoaderError, WorkerDiedError
from simpledet.data.targets import RpnAnchorAssigner

NUM_LANDSCAPE, NUM_PORTRAIT = 9, 5
RPN = RpnAnchorAssigner(functools.partial(feature_levels, strides=(8, 16)), (2.0,),
                        (0.5, 1.0, 2.0), batch_size=32)
BASE = dict(batch_size=2, short_sides=(64, 80), long_side=128, mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0), assigners=[RPN], max_gt=4)


def make_record(directory, image_id, height, width, boxes):
    """A black image with the gt boxes painted white, so contents can be checked after
    resize and flip."""
    image = np.zeros((height, width, 3), np.uint8)
    for x1, y1, x2, y2 in boxes:
        image[y1:y2 + 1, x1:x2 + 1] = 255
    path = os.path.join(directory, f"img_{image_id:03d}.png")
    cv2.imwrite(path, image)
    return {"image_id": image_id, "file_name": path, "height": height, "width": width,
            "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "classes": np.arange(1, len(boxes) + 1, dtype=np.int32),
            "crowd_boxes": np.zeros((0, 4), np.float32), "segmentations": [], "flipped": False}


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("loader_images"))
    rng = np.random.default_rng(0)
    out = []
    for image_id in range(NUM_LANDSCAPE + NUM_PORTRAIT):
        height, width = (48, 64) if image_id < NUM_LANDSCAPE else (64, 48)
        count = image_id % 3  # 0, 1 or 2 boxes: images without gt are loaded too
        boxes = []
        for _ in range(count):
            x1, y1 = rng.integers(0, width - 20), rng.integers(0, height - 20)
            boxes.append([x1, y1, x1 + rng.integers(10, 19), y1 + rng.integers(10, 19)])
        out.append(make_record(directory, 100 + image_id, height, width, boxes))
    order = rng.permutation(len(out))  # mix orientations in the record list
    return [out[i] for i in order]


def collect(loader, count=None):
    batches = []
    for batch in loader:
        batches.append(batch)
        if count is not None and len(batches) == count:
            break
    return batches


def assert_same_batches(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def assert_processes_gone(pids, within=5.0):
    deadline = time.monotonic() + within
    for pid in pids:
        while os.path.exists(f"/proc/{pid}"):
            with open(f"/proc/{pid}/stat") as stat:
                state = stat.read().rsplit(")", 1)[1].split()[0]
            assert time.monotonic() < deadline, f"process {pid} still exists (state {state})"
            time.sleep(0.05)


def test_batch_shapes_buckets_and_contents(records):
    loader = DetectionLoader(records, num_workers=0, **BASE)
    batches = collect(loader)
    # 9 landscape -> 5 batches (one wrapped), 5 portrait -> 3 batches.
    assert len(batches) == len(loader) == 8
    shapes = [b["data"].shape for b in batches]
    assert shapes.count((2, 3, 96, 128)) == 5 and shapes.count((2, 3, 128, 96)) == 3
    by_id = {r["image_id"]: r for r in records}
    num_anchors = 3 * (12 * 16 + 6 * 8)  # levels of a 96 x 128 bucket at strides 8 and 16
    for batch in batches:
        size, _, bucket_h, bucket_w = batch["data"].shape
        assert batch["im_info"].shape == (2, 3) and batch["gt_boxes"].shape == (2, 4, 5)
        assert batch["image_ids"].dtype == np.int64 and batch["valid"].all()
        assert batch["rpn_label"].shape == (2, num_anchors)
        assert batch["rpn_target"].shape == batch["rpn_weight"].shape == (2, 4 * num_anchors)
        for slot in range(size):
            record = by_id[int(batch["image_ids"][slot])]
            height, width, scale = batch["im_info"][slot]
            assert scale in (pytest.approx(min(s / 48, 128 / 64)) for s in (64, 80))
            assert (height, width) == (round(record["height"] * scale),
                                       round(record["width"] * scale))
            image = batch["data"][slot]
            assert (image[:, int(height):, :] == 0).all() and (image[:, :, int(width):] == 0).all()
            gt = batch["gt_boxes"][slot]
            count = len(record["boxes"])
            assert (gt[count:] == -1).all()
            np.testing.assert_array_equal(gt[:count, 4], record["classes"])
            widths = gt[:count, 2] - gt[:count, 0] + 1  # "+1" widths scale by the scale
            np.testing.assert_allclose(widths, (record["boxes"][:, 2] - record["boxes"][:, 0]
                                                + 1) * scale, rtol=1e-5)
            for x1, y1, x2, y2 in gt[:count, :4]:
                # Box centres are white (255) after resize and (maybe) flip.
                cx, cy = int(round((x1 + x2) / 2)), int(round((y1 + y2) / 2))
                assert (image[:, cy, cx] > 200).all()
            if count == 0:
                assert image.max() == 0 and (batch["rpn_label"][slot] != 1).all()


def test_flip_and_multiscale_both_happen(records):
    loader = DetectionLoader(records, num_workers=0, **BASE)
    scales, flipped = set(), []
    by_id = {r["image_id"]: r for r in records}
    for _ in range(3):
        for batch in loader:
            scales.update(np.round(batch["im_info"][:, 2], 4).tolist())
            for slot, image_id in enumerate(batch["image_ids"]):
                record = by_id[int(image_id)]
                if len(record["boxes"]):
                    x1 = record["boxes"][0, 0] * batch["im_info"][slot, 2]
                    flipped.append(not np.isclose(batch["gt_boxes"][slot, 0, 0], x1))
    assert len(scales) == 2
    assert 0 < sum(flipped) < len(flipped)


def test_same_seed_same_batches_and_epochs_differ(records):
    first = DetectionLoader(records, num_workers=0, seed=3, **BASE)
    second = DetectionLoader(records, num_workers=0, seed=3, **BASE)
    epoch0 = collect(first)
    assert_same_batches(epoch0, collect(second))
    epoch1 = collect(first)
    assert first.epoch == 2 and first.batch_index == 0
    ids0 = [b["image_ids"].tolist() for b in epoch0]
    ids1 = [b["image_ids"].tolist() for b in epoch1]
    assert ids0 != ids1
    # Each epoch sees every record.
    for ids in (ids0, ids1):
        assert {i for batch in ids for i in batch} == {r["image_id"] for r in records}
    other_seed = DetectionLoader(records, num_workers=0, seed=4, **BASE)
    assert [b["image_ids"].tolist() for b in collect(other_seed)] != ids0


def test_workers_give_the_same_batches_as_inline(records):
    inline = collect(DetectionLoader(records, num_workers=0, **BASE))
    with DetectionLoader(records, num_workers=2, **BASE) as loader:
        assert_same_batches(inline, collect(loader))
        pids = loader.worker_pids
        assert len(pids) == 2
        collect(loader)  # a second epoch reuses the same worker processes
        assert loader.worker_pids == pids
    assert loader.worker_pids == []
    assert_processes_gone(pids)


def digest(batch):
    return {key: (value.shape, float(np.asarray(value, np.float64).sum())) for key, value in
            batch.items()}


def test_shared_memory_slots_are_recycled_without_corruption(records):
    expected = [digest(b) for b in collect(DetectionLoader(records, num_workers=0, **BASE))]
    with DetectionLoader(records, num_workers=2, prefetch=2, **BASE) as loader:
        seen = [digest(batch) for batch in loader]  # each batch dropped after use
        assert seen == expected
        for _ in range(3):  # later epochs reuse the slots instead of making new ones
            for batch in loader:
                del batch
        # Slots ever made: about the batches in flight + the one the consumer holds.
        assert loader._pool_holder[0].num_slots <= 6
        held = next(iter(loader))
        snapshot = {k: v.copy() for k, v in held.items()}
    # Closing the loader does not pull the memory from under a batch still held.
    for key, value in held.items():
        np.testing.assert_array_equal(value, snapshot[key])


def test_sharding_is_disjoint_covering_and_balanced(records):
    plain = dict(BASE, assigners=(), batch_size=1)
    parts = [DetectionLoader(records, num_workers=0, rank=r, num_parts=2, **plain)
             for r in range(2)]
    plans = [p.plan(0) for p in parts]
    assert len(plans[0]) == len(plans[1]) == 7
    ids = [{i for batch in plan for i in batch} for plan in plans]
    assert not ids[0] & ids[1]
    assert ids[0] | ids[1] == set(range(len(records)))
    # Batch randomness follows the global batch index, not the rank.
    assert collect(parts[0], 1)[0]["image_ids"] != collect(parts[1], 1)[0]["image_ids"]
    # 8 batches of 2 over 3 parts: padded to 9 so every part runs 3 steps.
    uneven = [DetectionLoader(records, num_workers=0, rank=r, num_parts=3, **BASE)
              for r in range(3)]
    assert [len(u) for u in uneven] == [3, 3, 3]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_from_state_dict(records, num_workers):
    kwargs = dict(BASE, seed=11, num_workers=num_workers)
    with DetectionLoader(records, **kwargs) as reference:
        straight = collect(reference) + collect(reference)
    with DetectionLoader(records, **kwargs) as interrupted:
        collect(interrupted)
        collect(interrupted, 3)
        state = interrupted.state_dict()
    assert state["epoch"] == 1 and state["batch_index"] == 3
    with DetectionLoader(records, **kwargs) as resumed:
        resumed.load_state_dict(state)
        assert_same_batches(collect(resumed), straight[len(straight) // 2 + 3:])
        assert resumed.state_dict()["epoch"] == 2


def test_state_dict_rejects_another_setup(records):
    loader = DetectionLoader(records, num_workers=0, **BASE)
    state = dict(loader.state_dict(), seed=99)
    with pytest.raises(ValueError, match="seed=99"):
        loader.load_state_dict(state)


def test_abandoned_iteration_does_not_leak_into_the_next(records):
    expected = collect(DetectionLoader(records, num_workers=0, **BASE))
    with DetectionLoader(records, num_workers=2, prefetch=4, **BASE) as loader:
        collect(loader, 1)  # leaves batches in flight
        loader.load_state_dict({"epoch": 0, "batch_index": 0})
        assert_same_batches(collect(loader), expected)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_bad_image_error_names_the_file(records, tmp_path, num_workers):
    corrupt = tmp_path / "broken_image.png"
    corrupt.write_bytes(b"\x89PNG garbage")
    bad = dict(records[0], file_name=str(corrupt))
    with DetectionLoader([bad] + records[1:], num_workers=num_workers, **BASE) as loader:
        with pytest.raises(LoaderError, match="broken_image.png"):
            collect(loader)


def test_skip_bad_images_flags_and_counts(records, tmp_path):
    missing = dict(records[0], file_name=str(tmp_path / "gone.png"))
    loader = DetectionLoader([missing] + records[1:], num_workers=0, skip_bad_images=True,
                             **BASE)
    batches = collect(loader)
    assert [f for f, _ in loader.bad_images] == [missing["file_name"]]
    invalid = [b for b in batches if not b["valid"].all()]
    assert len(invalid) == 1 and (~invalid[0]["valid"]).sum() == 1


def test_truncated_gt_is_counted(records):
    loader = DetectionLoader(records, num_workers=0, **dict(BASE, max_gt=1))
    collect(loader)
    expected = sum(max(len(r["boxes"]) - 1, 0) for r in records)
    # Landscape batches wrap around, so some images appear twice in the epoch.
    assert loader.truncated_gt >= expected > 0


@pytest.mark.timeout(60)
def test_killed_worker_raises_within_seconds(records):
    loader = DetectionLoader(records, num_workers=2, **dict(BASE, batch_size=1))
    try:
        iterator = iter(loader)
        next(iterator)
        victim = loader.worker_pids[0]
        os.kill(victim, signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(WorkerDiedError, match=f"pid {victim}.*SIGKILL"):
            for _ in iterator:
                pass
        assert time.monotonic() - start < 10
        others = [p for p in loader.worker_pids]
        assert others == []  # the broken pool was shut down
    finally:
        loader.close()
    assert_processes_gone([victim])
    # The loader recovers with a fresh pool.
    with loader:
        loader.load_state_dict({"epoch": 0, "batch_index": 0})
        assert len(collect(loader)) == len(loader)


def test_test_mode_covers_every_record_once_in_order(records):
    for batch_size in (1, 3):
        loader = DetectionLoader(records, num_workers=0, for_training=False,
                                 **dict(BASE, batch_size=batch_size, shuffle=True))
        batches = collect(loader)
        assert all("rpn_label" not in b for b in batches)
        ids = [int(i) for b in batches for i, v in zip(b["image_ids"], b["valid"]) if v]
        assert sorted(ids) == sorted(r["image_id"] for r in records)
        if batch_size == 1:
            assert ids == [r["image_id"] for r in records]
        else:  # order kept within each bucket
            landscape = [r["image_id"] for r in records if r["width"] >= r["height"]]
            assert [i for i in ids if i in landscape] == landscape
            assert sum((~b["valid"]).sum() for b in batches) == 1  # 5 portrait: 1 padding slot
        # No flip and the largest scale: gt boxes are the record's "+1" boxes times the scale
        # ([x1, x2 + 1) -> [x1 * s, (x2 + 1) * s)).
        by_id = {r["image_id"]: r for r in records}
        for batch in batches:
            for slot, image_id in enumerate(batch["image_ids"]):
                record = by_id[int(image_id)]
                scale = batch["im_info"][slot, 2]
                assert scale == pytest.approx(min(80 / 48, 128 / 64))
                count = len(record["boxes"])
                want = record["boxes"] * scale
                want[:, 2:] += scale - 1
                np.testing.assert_allclose(batch["gt_boxes"][slot, :count, :4], want, rtol=1e-5)


def test_test_mode_shards_cover_once(records):
    parts = [DetectionLoader(records, num_workers=0, for_training=False, rank=r, num_parts=3,
                             **dict(BASE, batch_size=2)) for r in range(3)]
    ids = []
    for part in parts:
        for batch in part.plan(0):
            ids.extend(batch)
    assert set(ids) == set(range(len(records)))


def test_construction_errors_are_clear(records):
    with pytest.raises(TypeError, match="pos_threshold"):
        RpnAnchorAssigner(functools.partial(feature_levels, strides=(8,)), (2.0,), (1.0,),
                          pos_threshold=0.5)
    with pytest.raises(TypeError, match="is not a target assigner"):
        DetectionLoader(records, num_workers=0, **dict(BASE, assigners=[{"levels_fn": None}]))
    unpicklable = RpnAnchorAssigner(lambda h, w: feature_levels(h, w, (8,)), (2.0,), (1.0,))
    with pytest.raises(TypeError, match="does not pickle"):
        DetectionLoader(records, num_workers=1, **dict(BASE, assigners=[unpicklable]))
    DetectionLoader(records, num_workers=0, **dict(BASE, assigners=[unpicklable]))  # inline
    broken = dict(records[0])
    del broken["boxes"]
    with pytest.raises(ValueError, match="record 0 has no key 'boxes'"):
        DetectionLoader([broken], num_workers=0, **BASE)
    with pytest.raises(ValueError, match="rank"):
        DetectionLoader(records, num_workers=0, rank=2, num_parts=2, **BASE)
