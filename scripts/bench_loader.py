"""Loader throughput: synthetic JPEGs through the full training chain, in images per second.

Generates N random JPEGs (480x640 by default) with random boxes in a temporary directory and runs
DetectionLoader at short 800 / long 1333 with FPN anchor targets (strides 4..64, scales (8,),
ratios (0.5, 1, 2), feature sizes ceil(bucket / stride)), as a Faster R-CNN FPN config would.
Also times each stage on one process, to show where the time goes.

    python scripts/bench_loader.py --images 64 --workers 2 [--json out.json]
"""
import argparse
import functools
import json
import os
import tempfile
import time

import cv2
import numpy as np

from simpledet.data.anchor_target import feature_levels
from simpledet.data.loader import DetectionLoader
from simpledet.data.targets import ImageSample, RpnAnchorAssigner
from simpledet.data.transforms import (
    bucket_shape,
    normalize_pad_chw,
    random_flip,
    read_image,
    resize_image,
    scale_boxes,
)

FPN_STRIDES = (4, 8, 16, 32, 64)
MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def make_records(directory, count, height, width, seed=0):
    """Writes count random JPEGs with 1-20 random boxes each; returns their records."""
    rng = np.random.default_rng(seed)
    records = []
    for image_id in range(count):
        # Smooth noise compresses like a photo rather than like white noise.
        small = rng.integers(0, 256, (height // 8, width // 8, 3), dtype=np.uint8)
        image = cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)
        path = os.path.join(directory, f"{image_id:06d}.jpg")
        cv2.imwrite(path, image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        num = int(rng.integers(1, 21))
        x1 = rng.uniform(0, width - 16, num)
        y1 = rng.uniform(0, height - 16, num)
        x2 = np.minimum(x1 + rng.uniform(8, width / 2, num), width - 1)
        y2 = np.minimum(y1 + rng.uniform(8, height / 2, num), height - 1)
        records.append({
            "image_id": image_id, "file_name": path, "height": height, "width": width,
            "boxes": np.stack([x1, y1, x2, y2], axis=1).astype(np.float32),
            "classes": rng.integers(1, 81, num).astype(np.int32),
            "crowd_boxes": np.zeros((0, 4), np.float32), "segmentations": [], "flipped": False})
    return records


def rpn_assigner():
    return RpnAnchorAssigner(functools.partial(feature_levels, strides=FPN_STRIDES), (8,),
                             (0.5, 1, 2), batch_size=256, fg_fraction=0.5, allowed_border=0)


def stage_times(records, short, long, repeats=5):
    """Milliseconds per image of each stage, in this process."""
    totals = dict.fromkeys(["read", "resize", "flip", "normalize_pad", "anchor_targets"], 0.0)
    rng = np.random.default_rng(0)
    assigner = rpn_assigner()
    for record in records[:repeats]:
        t0 = time.perf_counter()
        image = read_image(record["file_name"], (record["height"], record["width"]))
        t1 = time.perf_counter()
        image, im_info = resize_image(image, short, long)
        boxes = scale_boxes(record["boxes"], im_info)
        t2 = time.perf_counter()
        image, boxes, _, _ = random_flip(rng, image, boxes, prob=1.0)
        t3 = time.perf_counter()
        bucket = bucket_shape(record["height"], record["width"], short, long)
        normalize_pad_chw(image, MEAN, STD, bucket)
        t4 = time.perf_counter()
        sample = ImageSample(boxes=boxes, classes=record["classes"],
                             crowd_boxes=record["crowd_boxes"], im_info=im_info, bucket=bucket)
        assigner.assign(sample, rng, {name: np.empty(shape, dtype) for name, (shape, dtype)
                                      in assigner.outputs(*bucket).items()})
        t5 = time.perf_counter()
        for key, seconds in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            totals[key] += seconds
    return {key: round(1000 * value / repeats, 2) for key, value in totals.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=64, help="synthetic images to generate")
    parser.add_argument("--workers", type=int, default=2, help="loader worker processes")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--warmup", type=int, default=4, help="batches excluded from timing")
    parser.add_argument("--batches", type=int, default=40, help="batches timed")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_loader_") as directory:
        records = make_records(directory, args.images, args.height, args.width)
        stages = stage_times(records, 800, 1333)
        loader = DetectionLoader(
            records, batch_size=args.batch_size, short_sides=(800,), long_side=1333,
            mean=MEAN, std=STD, assigners=[rpn_assigner()], num_workers=args.workers,
            prefetch=max(4, 2 * args.workers), seed=0)
        with loader:
            seen, start = 0, None
            while seen < args.warmup + args.batches:
                for batch in loader:
                    seen += 1
                    if seen == args.warmup:
                        start = time.perf_counter()
                    if seen == args.warmup + args.batches:
                        break
            elapsed = time.perf_counter() - start
    images = args.batches * args.batch_size
    result = {
        "images_per_second": round(images / elapsed, 2),
        "ms_per_batch": round(1000 * elapsed / args.batches, 1),
        "workers": args.workers, "batch_size": args.batch_size,
        "image_size": [args.height, args.width], "batch_shape": list(batch["data"].shape),
        "anchors": int(batch["rpn_label"].shape[1]), "timed_batches": args.batches,
        "cpu_cores": len(os.sched_getaffinity(0)), "stage_ms_per_image_one_process": stages,
    }
    print(f"loader: {result['images_per_second']} img/s ({result['ms_per_batch']} ms/batch of "
          f"{args.batch_size}, {args.workers} workers, {result['cpu_cores']} cores)")
    print("stages (ms/image, one process): " +
          ", ".join(f"{k} {v}" for k, v in stages.items()))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=2)


if __name__ == "__main__":
    main()
