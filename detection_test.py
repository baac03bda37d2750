"""Evaluates a trained detector on the config's val split with COCO AP.

    python detection_test.py --config config/faster_r50v1_fpn_1x.py [--iter N] [--json OUT]
        [--vis K] [--set KEY=VALUE ...] [--gpus 0,1 | --cpus N]

Loads the latest checkpoint of experiments/<name>/ (or iteration N), runs the test graph over
the val split, writes the COCO results to experiments/<name>/results_iter_<N>_bbox.json, prints
COCOeval's summary, writes {"bbox": {"AP", "AP50", "AP75", "APs", "APm", "APl"}} to --json and,
with --vis K, draws K images with their detections to experiments/<name>/vis/iter_<N>/.
"""
import argparse
import sys


def parse_args(argv=None):
    from simpledet.config import add_config_arguments
    from simpledet.engine.contexts import add_context_arguments

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    add_context_arguments(parser)
    parser.add_argument("--iter", type=int, default=None, metavar="N",
                        help="checkpoint iteration (default: the latest)")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the AP numbers here")
    parser.add_argument("--vis", type=int, default=0, metavar="K",
                        help="draw K images with their detections")
    return parser.parse_args(argv)


def fail(message, code=2):
    print(f"error: {message}", file=sys.stderr)
    return code


def main(argv=None):
    args = parse_args(argv)
    from simpledet.config import exit_on_config_error, load_config
    from simpledet.data.coco import DatasetError
    from simpledet.engine.build import DatasetMissingError, check_dataset_files, prepare_dataset
    from simpledet.engine.checkpoint import CheckpointError, find_checkpoint
    from simpledet.engine.contexts import context_overrides

    try:
        overrides = list(args.overrides) + context_overrides(args.gpus, args.cpus)
    except ValueError as err:
        return fail(str(err))
    with exit_on_config_error():
        cfg = load_config(args.config, overrides)
    try:
        prepare_dataset(cfg, log=lambda msg: print(msg, flush=True))
        check_dataset_files(cfg, "val")
        find_checkpoint(cfg.experiment_dir, args.iter)
    except (DatasetMissingError, DatasetError, CheckpointError) as err:
        return fail(str(err))

    from simpledet.data.coco import DatasetError
    from simpledet.engine.build import build_detector
    from simpledet.engine.contexts import make_contexts
    from simpledet.engine.tester import run_test
    from simpledet.utils.logging import setup_logging

    setup_logging()
    try:
        run_test(cfg, build_detector(cfg), make_contexts(cfg.runtime), iteration=args.iter,
                 json_out=args.json, vis=args.vis)
    except (DatasetError, CheckpointError) as err:
        return fail(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
