"""Evaluates a COCO results json against a ground-truth annotation json.

    python scripts/eval_coco.py --gt data/coco/annotations/instances_val2017.json \
        --dt experiments/x/results.json [--iou-type bbox|segm] [--json metrics.json]

Prints COCOeval's 12-number summary; --json writes {"<iou-type>": {"AP", "AP50", "AP75", "APs",
"APm", "APl"}}. A missing or malformed input file is a one-line error and exit code 2.
"""
import argparse
import json
import os
import sys

JSON_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gt", required=True, help="ground-truth instances_*.json")
    parser.add_argument("--dt", required=True, help="COCO results json (list of detections)")
    parser.add_argument("--iou-type", default="bbox", choices=("bbox", "segm"))
    parser.add_argument("--json", default=None, help="write the AP numbers here")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from simpledet.data.coco import DatasetError
    from simpledet.engine.evaluation import evaluate_coco

    try:
        summary = evaluate_coco(args.gt, args.dt, args.iou_type)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        out = {args.iou_type: {k: summary[k] for k in JSON_KEYS}}
        folder = os.path.dirname(os.path.abspath(args.json))
        os.makedirs(folder, exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
