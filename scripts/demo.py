"""Detects objects in a few images and draws them: boxes, class names, scores (and masks).

    python scripts/demo.py --config config/shapes/mask_fpn.py IMAGE [IMAGE ...]
        [--iter N | --params FILE] [--out DIR] [--score 0.5] [--json FILE]
        [--set KEY=VALUE ...] [--gpus 0 | --cpus 1]

Like detection_test.py it builds the model from the experiment's saved config
(experiments/<name>/config.json, with this command's --set applied) and loads its latest
checkpoint (or iteration N; or --params: a model.params file or a checkpoint folder). Images of
any size and format OpenCV reads go through the test loader's resize and the detector's test
graph (any family: Faster, Mask, Cascade R-CNN, RetinaNet); each is written to
DIR/<image name>.png (default DIR: experiments/<name>/demo/), drawn by simpledet.utils.draw
(small images upscaled to 640 pixels on the long side, one colour per class), and its
detections scoring >= --score are printed, best first:

    <image> (HxW): N detections with score >= 0.50 -> <picture>
      0.973  [x1, y1, x2, y2]  class name

with boxes in the image's own pixels. Put the images before --set (which takes every word
after it). Errors are one 'error: ...' line on stderr naming the file (one per missing or
unreadable image, all checked before the model loads; --debug adds the Python traceback):
exit code 2 for bad images, config, checkpoint or parameter file.
"""
import argparse
import os
import sys

# run from a checkout without installing: the repository root on the path
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_args(argv=None):
    from simpledet.config import add_config_arguments
    from simpledet.engine.cli import add_debug_argument
    from simpledet.engine.contexts import add_context_arguments
    from simpledet.utils.draw import DEFAULT_SCORE_THRESH

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any size)")
    add_config_arguments(parser)
    add_context_arguments(parser)
    add_debug_argument(parser)
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument("--iter", type=int, default=None, metavar="N",
                         help="checkpoint iteration (default: the latest)")
    weights.add_argument("--params", default=None, metavar="FILE",
                         help="parameters to use instead: an mx.nd.save file such as a "
                              "checkpoint's model.params, or a checkpoint folder")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="where the pictures go (default: experiments/<name>/demo)")
    parser.add_argument("--score", type=float, default=DEFAULT_SCORE_THRESH, metavar="S",
                        help="draw and print the detections scoring >= S (default: "
                             "%(default)s)")
    parser.add_argument("--json", default=None, metavar="FILE",
                        help="also write the printed detections as JSON here")
    return parser.parse_args(argv)


def picture_paths(images, out_dir):
    """out_dir/<image file stem>.png per image; a stem met again gets _2, _3, ..."""
    paths, seen = [], {}
    for image in images:
        stem = os.path.splitext(os.path.basename(image))[0] or "image"
        seen[stem] = seen.get(stem, 0) + 1
        suffix = f"_{seen[stem]}" if seen[stem] > 1 else ""
        paths.append(os.path.join(out_dir, f"{stem}{suffix}.png"))
    return paths


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
    if not 0.0 <= args.score <= 1.0:
        return fail(f"--score {args.score}: expected a score threshold in [0, 1]")
    try:
        cfg = load_experiment_config(args)
    except CliError as err:
        return fail(str(err))

    from simpledet.data.coco import DatasetError, decode_image_file

    # every image is checked before the model loads: a typo fails at once, each bad file on
    # its own error line
    bad = []
    for image in args.images:
        try:
            decode_image_file(image)
        except DatasetError as err:
            bad.append(str(err))
    if bad:
        for message in bad:
            fail(message)
        return 2

    import mxnet as mx

    from simpledet.engine.build import build_detector
    from simpledet.engine.checkpoint import error_reason
    from simpledet.engine.contexts import make_contexts
    from simpledet.engine.inference import (
        ImagePredictor,
        WeightsError,
        detections_table,
        load_weights,
    )
    from simpledet.utils.draw import write_picture

    out_dir = args.out or os.path.join(cfg.experiment_dir, "demo")
    report = []
    try:
        detector = build_detector(cfg)
        # an RPN-only model's results are class-1 proposals of no category: label them so
        proposals = "proposal" in detector.eval_types
        class_names = ("proposal",) if proposals else tuple(cfg.dataset.class_names)
        arg_params, aux_params, source = load_weights(cfg.experiment_dir, args.iter,
                                                      args.params)
        print(f"model: {cfg.name} ({type(cfg).__name__}), parameters: {source}", flush=True)
        predictor = ImagePredictor(cfg, detector, make_contexts(cfg.runtime)[0],
                                   arg_params, aux_params, source)
        os.makedirs(out_dir, exist_ok=True)
        for image, picture in zip(args.images, picture_paths(args.images, out_dir)):
            pixels = decode_image_file(image)
            det = predictor(pixels)
            write_picture(picture, pixels, det, class_names, args.score)
            rows = detections_table(det, class_names, args.score)
            height, width = pixels.shape[:2]
            print(f"{image} ({height}x{width}): {len(rows)} detections with score >= "
                  f"{args.score:.2f} -> {picture}")
            for score, box, name, _ in rows:
                print(f"  {score:.3f}  [{', '.join(f'{v:.1f}' for v in box)}]  {name}")
            sys.stdout.flush()
            report.append({"image": image, "height": height, "width": width,
                           "picture": picture, "detections": [
                               {"score": score, "box": box, "class": name, "label": label}
                               for score, box, name, label in rows]})
    except (CheckpointError, WeightsError, DatasetError) as err:
        return fail(str(err))
    except OSError as err:
        return fail(f"{err.filename or out_dir}: {error_reason(err)}" if err.filename
                    else str(err))
    except mx.base.MXNetError as err:
        return fail(f"MXNet: {error_reason(err)}")
    except KeyboardInterrupt:
        return fail("interrupted (SIGINT)", code=130)
    if args.json:
        from simpledet.engine.tester import write_json

        write_json(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
