"""Generates the synthetic shapes dataset in COCO layout.

    python scripts/make_shapes.py --out data/shapes [--train 1000] [--val 200] [--seed 0]
        [--size 256x320] [--format jpg|png]

Writes DIR/images/{train,val}/ and DIR/annotations/instances_{train,val}.json (see
simpledet/data/shapes.py for what the images hold). Re-running with the same parameters is a
no-op; a DIR holding something else is refused (exit code 2).
"""
import argparse
import sys
import time


def parse_size(text):
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 256x320, got {text!r}") from None
    return height, width


def parse_args(argv=None):
    # No simpledet import here: a usage error should not wait for MXNet to load.
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="dataset folder to create")
    parser.add_argument("--train", type=int, default=1000, help="training images")
    parser.add_argument("--val", type=int, default=200, help="validation images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=parse_size, default=None,
                        help="image size HxW (default: shapes.DEFAULT_SIZE, 256x320)")
    parser.add_argument("--format", default="jpg", choices=("jpg", "png"))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from simpledet.data.coco import DatasetError
    from simpledet.data.shapes import DEFAULT_SIZE, ensure_shapes_dataset, shapes_params

    size = args.size or DEFAULT_SIZE

    try:
        shapes_params(args.train, args.val, args.seed, size, args.format)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    start = time.time()
    try:
        paths = ensure_shapes_dataset(args.out, train=args.train, val=args.val, seed=args.seed,
                                      size=size, image_format=args.format)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for split in ("train", "val"):
        ann_file, image_dir = paths.split(split)
        print(f"{split}: {ann_file} ({image_dir})")
    print(f"done in {time.time() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
