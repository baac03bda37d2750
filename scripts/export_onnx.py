"""Exports a detector's test graph to ONNX, SimpleDet's custom ops lowered to standard ONNX ops.

    python scripts/export_onnx.py --config config/shapes/faster_fpn.py --out model.onnx
        [--iter N | --params FILE | --init] [--batch B] [--bucket H W] [--verify]
        [--set KEY=VALUE ...]

Parameters: by default the experiment's saved config (experiments/<name>/config.json, with
this command's --set applied) and its latest checkpoint (or iteration N); --params FILE reads
an MXNet .params file with 'arg:'/'aux:' keys (as checkpoints write them); --init takes the
detector's initializer instead (no training needed: to try the export).

The file's inputs are the test graph's at a static shape: data (B, 3, Hb, Wb) float32
normalized pixels and im_info (B, 3) [height, width, scale] of the resized image, (Hb, Wb) the
config's landscape bucket unless --bucket; its outputs are the test graph's (Faster R-CNN:
dets (B, max_det, 6) [x1, y1, x2, y2, score, class] in network-input pixels, rows of -1 when
unused). How the custom ops are lowered: simpledet/export/onnx_ops.py.

--verify runs MXNet and onnxruntime (CPU) on a synthetic shapes image and prints how far the
detections are apart; exit code 1 when classes differ or boxes/scores differ by more than 1e-3.

Errors are one 'error: ...' line on stderr (--debug adds the Python traceback), exit code 2.
"""
import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args(argv=None):
    from simpledet.config import add_config_arguments
    from simpledet.engine.cli import add_debug_argument

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    add_debug_argument(parser)
    parser.set_defaults(gpus=None, cpus=None)  # export runs on the CPU
    parser.add_argument("--out", required=True, metavar="FILE", help="the .onnx file to write")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--iter", type=int, default=None, metavar="N",
                        help="checkpoint iteration (default: the latest)")
    source.add_argument("--params", default=None, metavar="FILE",
                        help="an MXNet .params file ('arg:'/'aux:' keys) instead of a checkpoint")
    source.add_argument("--init", action="store_true",
                        help="initialized parameters instead of a checkpoint (no training)")
    parser.add_argument("--batch", type=int, default=1, metavar="B", help="images per run")
    parser.add_argument("--bucket", type=int, nargs=2, default=None, metavar=("H", "W"),
                        help="padded input size (default: the config's landscape bucket)")
    parser.add_argument("--verify", action="store_true",
                        help="compare onnxruntime's detections with MXNet's on one image")
    return parser.parse_args(argv)


def _check_shape_args(args):
    from simpledet.engine.build import SIZE_DIVISOR
    from simpledet.engine.cli import CliError

    if args.batch < 1:
        raise CliError(f"--batch must be >= 1, got {args.batch}")
    if args.bucket is not None and any(v < SIZE_DIVISOR or v % SIZE_DIVISOR
                                       for v in args.bucket):
        raise CliError(f"--bucket H W must be positive multiples of {SIZE_DIVISOR} (every "
                       f"backbone stride divides them), got {args.bucket[0]} {args.bucket[1]}")


def _load_params(args, cfg, detector, shapes):
    """(arg_params, aux_params, description of where they come from)."""
    from simpledet.engine.checkpoint import (
        CheckpointError,
        find_checkpoint,
        load_checkpoint,
        split_prefixed,
    )
    from simpledet.export.onnx_export import initialized_params

    if args.init:
        arg_params, aux_params = initialized_params(detector, shapes)
        return arg_params, aux_params, "initialized parameters (--init)"
    if args.params:
        import mxnet as mx

        if not os.path.isfile(args.params):
            raise CheckpointError(f"--params file not found: {os.path.abspath(args.params)}")
        try:
            loaded = mx.nd.load(args.params)
        except mx.base.MXNetError:
            raise CheckpointError(f"--params {args.params}: not an MXNet .params file "
                                  f"(unreadable or truncated)") from None
        arg_params, aux_params, plain = split_prefixed(loaded)
        if plain:
            raise CheckpointError(f"--params {args.params}: keys without 'arg:'/'aux:' "
                                  f"prefix: {sorted(plain)[:5]}")
        return arg_params, aux_params, args.params
    checkpoint = load_checkpoint(find_checkpoint(cfg.experiment_dir, args.iter))
    return (checkpoint.arg_params, checkpoint.aux_params,
            f"{checkpoint.path} (iteration {checkpoint.iteration})")


def _verify(cfg, detector, arg_params, aux_params, shapes, out):
    """Prints the MXNet / onnxruntime comparison; returns the exit code (0 or 1)."""
    import numpy as np

    from simpledet.export.onnx_export import (
        compare_detections,
        example_inputs,
        mxnet_outputs,
        run_onnx,
    )

    inputs = example_inputs(cfg, shapes)
    reference = mxnet_outputs(detector, arg_params, aux_params, inputs)
    exported = run_onnx(out, inputs)
    report = compare_detections(reference[0], exported[0])
    print(f"verify on {len(inputs['data'])} synthetic image(s): {report['detections']} "
          f"detections, same classes: "
          f"{report['same_classes']}, max relative box difference {report['max_rel_box']:.2e}, "
          f"max score difference {report['max_abs_score']:.2e}")
    names = detector.get_test_symbol().list_outputs()
    for name, ref, got in zip(names[1:], reference[1:], exported[1:]):
        print(f"  {name}: max abs difference {float(np.abs(ref - got).max()):.2e}")
    if not report["ok"]:
        print("verify: onnxruntime's detections differ from MXNet's beyond 1e-3",
              file=sys.stderr)
        return 1
    return 0


def main(argv=None):
    args = parse_args(argv)
    from simpledet.engine.checkpoint import CheckpointError
    from simpledet.engine.cli import (
        CliError,
        fail,
        load_experiment_config,
        start_cli,
    )

    start_cli(args)
    try:
        _check_shape_args(args)
        cfg = load_experiment_config(args)
    except CliError as err:
        return fail(str(err))

    from simpledet.engine.build import build_detector
    from simpledet.export.onnx_export import ExportError, export_detector
    from simpledet.export.onnx_ops import OPSET

    try:
        detector = build_detector(cfg)
        from simpledet.engine.build import bucket_shapes

        bucket = tuple(args.bucket) if args.bucket else bucket_shapes(cfg)[0]
        shapes = detector.test_data_shapes(args.batch, *bucket)
        arg_params, aux_params, source = _load_params(args, cfg, detector, shapes)
        _, model = export_detector(detector, arg_params, aux_params, args.out,
                                   batch_size=args.batch, bucket=bucket)
        inputs = ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items())
        outputs = ", ".join(
            f"{o.name} {tuple(d.dim_value for d in o.type.tensor_type.shape.dim)}"
            for o in model.graph.output)
        print(f"wrote {os.path.abspath(args.out)} ({os.path.getsize(args.out) / 1e6:.1f} MB, "
              f"opset {OPSET}) from {source}\n  inputs: {inputs}\n  outputs: {outputs}")
        if args.verify:
            return _verify(cfg, detector, arg_params, aux_params, shapes, args.out)
    except (ExportError, CheckpointError) as err:
        return fail(str(err))
    except KeyboardInterrupt:
        return fail("interrupted (SIGINT)", code=130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
