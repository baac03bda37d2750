"""How well a config's RPN anchors fit a split's ground-truth boxes (choosing anchor scales).

    python scripts/anchor_coverage.py --config config/shapes/rpn_fpn.py
    python scripts/anchor_coverage.py --config config/shapes/rpn_fpn.py --scales 8 --scales 4 \
        --scales 4,5.66

For each gt box (resized to the network input as the loader does, not flipped) it finds its
best anchor over every level of the padded bucket, tiled exactly as the proposal op and the
loader's anchor targets tile them (simpledet.core.anchors), and prints, per set of anchor
scales (the config's ``rpn.anchor_scales`` unless ``--scales`` is given), the fraction of boxes
whose best anchor reaches IoU >= ``rpn.pos_iou`` (a positive by threshold: the others get only
their best-anchor match) and >= 0.5, overall and by sqrt(area) in input pixels. Crowd boxes are
left out.
"""
import argparse
import sys

import numpy as np

SIZE_EDGES = (0, 32, 96, np.inf)  # COCO's small / medium / large, as sqrt(area)


def parse_args(argv=None):
    from simpledet.config import add_config_arguments

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_config_arguments(parser)
    parser.add_argument("--split", default="train", choices=("train", "val"))
    parser.add_argument("--scales", action="append", default=None, metavar="S1,S2",
                        help="anchor scales to compare (repeat the flag); default: the config's")
    parser.add_argument("--max-boxes", type=int, default=3000,
                        help="evaluate at most this many boxes (a seeded random subset)")
    return parser.parse_args(argv)


def parse_scales(text):
    """'4,5.66' -> (4.0, 5.66); exits with a one-line error naming the flag when bad."""
    try:
        scales = tuple(float(v) for v in text.split(","))
    except ValueError:
        sys.exit(f"error: --scales {text!r}: expected comma-separated numbers, e.g. 4,5.66")
    if not scales or min(scales) <= 0:
        sys.exit(f"error: --scales {text!r}: scales must be positive")
    return scales


def level_anchors(bucket, strides, scales, ratios):
    """(N, 4) anchors of every level of a padded (height, width) bucket."""
    from simpledet.core.anchors import grid_anchors
    from simpledet.data.anchor_target import feature_levels

    return np.concatenate([grid_anchors(stride, scales, ratios, h, w)
                           for stride, h, w in feature_levels(*bucket, strides)])


def best_anchor_iou(boxes_by_bucket, strides, scales, ratios, chunk=256):
    """Max IoU of each box with any anchor of its bucket, in the order of the boxes."""
    from simpledet.core.boxes import box_iou

    out = []
    for bucket, boxes in boxes_by_bucket:
        anchors = level_anchors(bucket, strides, scales, ratios)
        out.extend(box_iou(boxes[i:i + chunk], anchors).max(axis=1)
                   for i in range(0, len(boxes), chunk))
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def input_boxes(cfg, records, max_boxes, seed=0):
    """[(bucket, (n, 4) boxes in input pixels)] grouped by bucket, and the sqrt(area) of the
    boxes in the same order; at most ``max_boxes`` boxes (a seeded random subset)."""
    from simpledet.data.transforms import bucket_shape, resize_scale, scale_boxes

    rows = []
    for rec in records:
        height, width = rec["height"], rec["width"]
        scale = resize_scale(height, width, cfg.input.short, cfg.input.long)
        im_info = (round(height * scale), round(width * scale), scale)
        bucket = bucket_shape(height, width, cfg.input.short, cfg.input.long)
        for box in scale_boxes(rec["boxes"], im_info):  # the loader's "+1" mapping
            rows.append((bucket, box))
    if len(rows) > max_boxes:
        keep = np.random.default_rng(seed).choice(len(rows), max_boxes, replace=False)
        rows = [rows[i] for i in sorted(keep)]
    groups, sides = {}, []
    for bucket, box in rows:
        groups.setdefault(bucket, []).append(box)
    for bucket, boxes in groups.items():
        boxes = np.stack(boxes)
        groups[bucket] = boxes
        sides.append(np.sqrt((boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)))
    return list(groups.items()), (np.concatenate(sides) if sides else np.zeros(0))


def main(argv=None):
    args = parse_args(argv)
    from simpledet.config import exit_on_config_error, load_config
    from simpledet.engine.build import build_dataset
    from simpledet.engine.cli import prepare_split

    with exit_on_config_error():
        cfg = load_config(args.config, args.overrides)
    if not hasattr(cfg, "rpn"):
        sys.exit(f"error: {args.config}: {type(cfg).__name__} has no rpn section (no RPN "
                 f"anchors to check)")
    prepare_split(cfg, args.split)
    records = build_dataset(cfg, args.split, for_training=True).records
    groups, sides = input_boxes(cfg, records, args.max_boxes)
    candidates = ([parse_scales(s) for s in args.scales] if args.scales
                  else [tuple(cfg.rpn.anchor_scales)])
    pos = cfg.rpn.pos_iou
    names = ["all"] + [f"{lo:g}-{hi:g}px" for lo, hi in zip(SIZE_EDGES, SIZE_EDGES[1:])]
    masks = [np.ones(len(sides), bool)] + [(sides >= lo) & (sides < hi)
                                           for lo, hi in zip(SIZE_EDGES, SIZE_EDGES[1:])]
    print(f"{len(sides)} {args.split} boxes (sqrt(area) in input pixels); ratios "
          f"{tuple(cfg.rpn.anchor_ratios)}, strides {tuple(cfg.rpn_feature_strides)}")
    print("fraction of boxes whose best anchor has IoU >= rpn.pos_iou "
          f"({pos:g}) / >= 0.5, by size (count):")
    print(f"{'scales':>16}  " + "  ".join(f"{n} ({m.sum()})".rjust(17) for n, m in
                                          zip(names, masks)))
    for scales in candidates:
        best = best_anchor_iou(groups, cfg.rpn_feature_strides, scales, cfg.rpn.anchor_ratios)
        cells = [f"{(best[m] >= pos).mean() if m.any() else float('nan'):.2f} / "
                 f"{(best[m] >= 0.5).mean() if m.any() else float('nan'):.2f}" for m in masks]
        print(f"{str(scales):>16}  " + "  ".join(c.rjust(17) for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
