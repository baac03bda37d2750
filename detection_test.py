"""Evaluates a trained detector on the config's val split with COCO AP (proposals: AR).

    python detection_test.py --config config/faster_r50v1_fpn_1x.py [--iter N] [--json OUT]
        [--vis K [--vis-score S]] [--dump-proposals FILE] [--set KEY=VALUE ...]
        [--gpus 0,1 | --cpus N]

Builds the model from the experiment's saved config (experiments/<name>/config.json, with this
command's --set applied; differences from the config file are logged), loads its latest
checkpoint (or iteration N), runs the test graph over the val split, writes the COCO results
to experiments/<name>/results_iter_<N>_bbox.json (with each detection's RLE mask for Mask
R-CNN), prints COCOeval's summary of each of the detector's evaluations (bbox; bbox and segm
for Mask R-CNN), writes {"bbox": {"AP", "AP50", "AP75", "APs", "APm", "APl"}, ...} to --json
and, with --vis K, draws K images with their detections scoring >= --vis-score (0.5; and masks)
to experiments/<name>/vis/iter_<N>/ (simpledet.utils.draw, as scripts/demo.py draws).

An RPN-only config (config/rpn_r50v1_fpn_1x.py, config/shapes/rpn_fpn.py) is evaluated by
class-agnostic proposal recall instead: results_iter_<N>_proposal.json, AR@100/300/1000 and
AR small/medium/large at 1000 printed, {"proposal": {"AR100", "AR300", "AR1000", "ARs1000",
"ARm1000", "ARl1000"}} to --json; --dump-proposals FILE also writes every val image's
proposals in original-image pixels with their scores to FILE (.npz: image_ids, counts, boxes,
scores; read it with simpledet.engine.proposals.load_proposals).

Errors are one 'error: ...' line on stderr (--debug adds the Python traceback): exit code 2 for
bad input (config, data, checkpoint), 1 when a loader worker died, 130 on Ctrl-C.
"""
import argparse
import sys


def parse_args(argv=None):
    from simpledet.config import add_config_arguments
    from simpledet.engine.cli import add_debug_argument
    from simpledet.engine.contexts import add_context_arguments

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    add_context_arguments(parser)
    add_debug_argument(parser)
    parser.add_argument("--iter", type=int, default=None, metavar="N",
                        help="checkpoint iteration (default: the latest)")
    parser.add_argument("--json", default=None, metavar="OUT",
                        help="write the AP (proposals: AR) numbers here")
    parser.add_argument("--vis", type=int, default=0, metavar="K",
                        help="draw K images with their detections")
    parser.add_argument("--vis-score", type=float, default=0.5, metavar="S",
                        help="--vis draws the detections scoring >= S (default: %(default)s)")
    parser.add_argument("--dump-proposals", default=None, metavar="FILE",
                        help="RPN-only configs: write every image's proposals (original "
                             "pixels, scores) to this .npz file")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    from simpledet.engine.checkpoint import CheckpointError, find_checkpoint
    from simpledet.engine.cli import (
        CliError,
        fail,
        load_experiment_config,
        prepare_split,
        start_cli,
    )
    from simpledet.engine.proposals import NotProposalsError, require_proposals

    start_cli(args)
    try:
        cfg = load_experiment_config(args)
        if args.dump_proposals:
            require_proposals(type(cfg).detector_class)
        prepare_split(cfg, "val")
        find_checkpoint(cfg.experiment_dir, args.iter)
    except (CliError, CheckpointError, NotProposalsError) as err:
        return fail(str(err))

    from simpledet.data.coco import DatasetError
    from simpledet.data.loader import LoaderError, WorkerDiedError
    from simpledet.engine.build import build_detector
    from simpledet.engine.contexts import make_contexts
    from simpledet.engine.tester import run_test

    try:
        run_test(cfg, build_detector(cfg), make_contexts(cfg.runtime), iteration=args.iter,
                 json_out=args.json, vis=args.vis, vis_score=args.vis_score,
                 proposals_out=args.dump_proposals)
    except (DatasetError, CheckpointError, LoaderError) as err:
        return fail(str(err), code=1 if isinstance(err, WorkerDiedError) else 2)
    except KeyboardInterrupt:
        return fail("interrupted (SIGINT)", code=130)
    return 0


if __name__ == "__main__":
    sys.exit(main())
