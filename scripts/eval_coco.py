"""Evaluates a COCO results json against a ground-truth annotation json.

    python scripts/eval_coco.py --gt data/coco/annotations/instances_val2017.json \
        --dt experiments/x/results.json [--iou-type bbox|segm|proposal] [--json metrics.json]

Prints COCOeval's 12-number summary; --json writes {"<iou-type>": {"AP", "AP50", "AP75", "APs",
"APm", "APl"}}. ``--iou-type proposal`` scores the boxes class-agnostically by recall instead
(AR100, AR300, AR1000, ARs1000, ARm1000, ARl1000; simpledet.engine.evaluation.EVAL_TYPES). A
missing or malformed input file is a one-line error and exit code 2.
"""
import argparse
import json
import os
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", required=True, help="ground-truth instances_*.json")
    parser.add_argument("--dt", required=True, help="COCO results json (list of detections)")
    parser.add_argument("--iou-type", default="bbox", choices=("bbox", "segm", "proposal"))
    parser.add_argument("--json", default=None, help="write the AP (AR) numbers here")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from simpledet.data.coco import DatasetError
    from simpledet.engine.evaluation import EVAL_TYPES, evaluate_coco

    try:
        summary = evaluate_coco(args.gt, args.dt, args.iou_type)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        out = {args.iou_type: {k: summary[k] for k in EVAL_TYPES[args.iou_type].json_keys}}
        folder = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(folder, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
