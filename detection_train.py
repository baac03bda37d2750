"""Trains a detector described by a config file.

    python detection_train.py --config config/faster_r50v1_fpn_1x.py [--set KEY=VALUE ...]
        [--gpus 0,1 | --cpus N] [--resume] [--max-iter N]

Writes experiments/<name>/: config.py / config.json (the resolved config), train.log,
metrics.jsonl, checkpoints/iter_*/ and loss_curve.png. The data and the pretrained weights are
checked before anything is written or built: a missing dataset or weights file is a short error
naming the paths (exit code 2), as is a bad config. --resume continues from the latest
checkpoint that loads (parameters, optimizer state, data position) with the same schedule.

Errors are one 'error: ...' line on stderr (--debug adds the Python traceback): exit code 2 for
bad input (config, data, an unreadable checkpoint), 1 when the run fails (NaN loss, a loader
worker died, a checkpoint could not be written), 130 on Ctrl-C. See docs/reliability.md.

Under scripts/dist_launch.py (docs/distributed.md) every worker runs this script: the config
gets the launch's worker count and a dist kvstore, each worker trains on its shard of the
data, and only rank 0 writes the experiment folder; scheduler and server processes hand
themselves to ps-lite before anything else.
"""
import argparse
import os
import sys


def parse_args(argv=None):
    from simpledet.config import add_config_arguments
    from simpledet.engine.cli import add_debug_argument
    from simpledet.engine.contexts import add_context_arguments

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    add_context_arguments(parser)
    add_debug_argument(parser)
    parser.add_argument("--resume", action="store_true",
                        help="continue from the experiment's latest checkpoint")
    parser.add_argument("--max-iter", type=int, default=None, metavar="N",
                        help="stop after N iterations (the lr schedule stays the config's)")
    return parser.parse_args(argv)


def prepare_experiment_dir(cfg, resume):
    """Checks the experiment folder against --resume; returns an error message or None."""
    from simpledet.engine.checkpoint import list_checkpoints

    checkpoints = list_checkpoints(cfg.experiment_dir)
    if resume and not checkpoints:
        return (f"--resume: no checkpoint in {cfg.experiment_dir}/checkpoints; start without "
                "--resume")
    if not resume and checkpoints:
        return (f"{cfg.experiment_dir} already holds checkpoints (up to iteration "
                f"{checkpoints[-1][0]}); pass --resume to continue it, or choose another "
                f"experiment name with --set name=...")
    return None


def record_config(cfg, resume):
    """Dumps the resolved config; on resume, logs how it differs from the saved one."""
    import logging

    from simpledet.config import diff_configs, dump_config, format_diff, load_config

    saved = os.path.join(cfg.experiment_dir, "config.json")
    if resume and os.path.isfile(saved):
        differences = diff_configs(load_config(saved), cfg)
        if differences:
            logging.getLogger("simpledet.train").warning(
                "the config differs from the one the run started with:\n%s",
                format_diff(differences))
    dump_config(cfg, cfg.experiment_dir)


def load_launched_config(args):
    """The config, with the launch's worker count and dist kvstore in a launched worker.

    Returns:
        (cfg, number of launched workers or None).

    Raises:
        DistributedConfigError: the config and the launch disagree.
    """
    from simpledet.engine import distributed
    from simpledet.engine.cli import load_cli_config

    cfg, _ = load_cli_config(args)
    num_workers = distributed.launched_num_workers()
    if num_workers is None:
        distributed.check_single_process(cfg.runtime)
        return cfg, None
    # Applied before the config is frozen, so total_batch, lr and iterations count all workers.
    args.overrides = list(args.overrides) + distributed.dist_overrides(cfg.runtime, num_workers)
    cfg, _ = load_cli_config(args)
    distributed.check_supported(cfg)
    return cfg, num_workers


def main(argv=None):
    from simpledet.engine import distributed

    distributed.serve_if_ps_node()  # a launched scheduler / server runs ps-lite here and exits
    args = parse_args(argv)
    from simpledet.engine.cli import CliError, fail, prepare_split, set_debug
    from simpledet.engine.pretrained import PretrainedError, check_pretrained_exists

    set_debug(args.debug)

    # Everything that can fail fast is checked before the experiment folder exists, and in a
    # distributed run before joining the other processes (a worker that fails later makes
    # the launcher stop them all).
    try:
        cfg, num_workers = load_launched_config(args)
        prepare_split(cfg, "train")
        if not args.resume:
            check_pretrained_exists(cfg.pretrain_path, cfg.pretrain)
    except (CliError, PretrainedError, distributed.DistributedConfigError) as err:
        return fail(str(err))
    problem = prepare_experiment_dir(cfg, args.resume)
    if problem:
        return fail(problem)
    if args.max_iter is not None and args.max_iter < 1:
        return fail(f"--max-iter must be >= 1, got {args.max_iter}")

    worker = distributed.join(cfg.runtime.kvstore) if num_workers else None
    try:
        code = start_and_train(cfg, args, worker)
    except KeyboardInterrupt:  # before the training loop (train() handles it in the loop)
        if worker is not None:
            worker.abandon()
        return fail("interrupted (SIGINT)", code=130)
    except BaseException:
        if worker is not None:
            worker.abandon()
        raise
    if code and worker is not None:
        worker.abandon()
    return code


def start_and_train(cfg, args, worker):
    """Sets up logging (and, on rank 0, the experiment folder), then trains."""
    from simpledet.utils.logging import setup_logging

    if worker is not None and worker.rank != 0:
        log = setup_logging(tag=worker.tag)  # stdout only: rank 0 writes the folder
    else:
        os.makedirs(cfg.experiment_dir, exist_ok=True)
        log = setup_logging(os.path.join(cfg.experiment_dir, "train.log"),
                            tag=worker.tag if worker else None)
        record_config(cfg, args.resume)
    log.info("experiment %s: %d iterations at %d images/iteration, lr %g",
             cfg.experiment_dir, cfg.max_iter, cfg.total_batch, cfg.lr)
    return train(cfg, args, log, worker)


def stop(log, message, code):
    """Logs why the run stopped (train.log keeps it) and prints the error line."""
    from simpledet.engine.cli import fail

    log.error("%s", message)
    return fail(str(message), code=code)


def interrupted_message(cfg, trainer):
    """What a Ctrl-C stopped, and where to continue from."""
    from simpledet.engine.checkpoint import list_checkpoints

    checkpoints = list_checkpoints(cfg.experiment_dir)
    where = (f"the last checkpoint is {checkpoints[-1][1]} (continue with --resume)"
             if checkpoints else "no checkpoint was written yet")
    return f"interrupted (SIGINT) at iteration {trainer.iteration}; {where}"


def report_skipped_images(loader, log):
    """Logs how many images input.skip_bad_images left out (each was warned about once)."""
    files = sorted({file_name for file_name, _ in getattr(loader, "bad_images", [])})
    if files:
        log.warning("skipped %d unreadable image(s) (input.skip_bad_images): %s%s", len(files),
                    ", ".join(files[:5]), ", ..." if len(files) > 5 else "")


def train(cfg, args, log, worker=None):
    from simpledet.data.coco import DatasetError
    from simpledet.data.loader import LoaderError, WorkerDiedError
    from simpledet.engine.build import build_dataset, build_detector, build_train_loader
    from simpledet.engine.checkpoint import CheckpointError, CheckpointWriteError
    from simpledet.engine.contexts import make_contexts
    from simpledet.engine.distributed import ParameterSyncHook
    from simpledet.engine.health import DeadTrainingError
    from simpledet.engine.hooks import default_hooks
    from simpledet.engine.pretrained import PretrainedError
    from simpledet.engine.steps import NonFiniteLossError
    from simpledet.engine.trainer import build_trainer

    try:
        dataset = build_dataset(cfg, "train", for_training=True)
    except DatasetError as err:
        return stop(log, err, code=2)
    log.info("%s", dataset)
    detector = build_detector(cfg)
    rank, num_parts = (worker.rank, worker.num_workers) if worker else (0, 1)
    loader = build_train_loader(cfg, dataset.records, detector, rank=rank, num_parts=num_parts)
    hooks = None  # build_trainer's defaults
    if worker is not None:
        hooks = default_hooks(cfg.experiment_dir, cfg.train.log_interval,
                              cfg.train.checkpoint_interval, write_files=rank == 0,
                              tensorboard=cfg.train.tensorboard,
                              stop_when_dead=cfg.train.stop_when_dead)
        hooks.append(ParameterSyncHook(worker))
    try:  # the pretrained file's names are checked here, its shapes when the graph binds
        trainer = build_trainer(cfg, detector, loader, make_contexts(cfg.runtime),
                                max_iter=args.max_iter, load_pretrained_weights=not args.resume,
                                hooks=hooks, kvstore=worker.kvstore if worker else None)
    except PretrainedError as err:
        return stop(log, err, code=2)
    try:
        if args.resume:
            trainer.resume()
        trainer.train()
    except (NonFiniteLossError, DeadTrainingError) as err:
        return stop(log, err, code=1)
    except PretrainedError as err:
        return stop(log, err, code=2)
    except (LoaderError, CheckpointError) as err:
        # Bad data or an unreadable checkpoint: 2 (fix the input); a dead loader worker or a
        # failed checkpoint write (disk full): 1.
        failed = isinstance(err, (WorkerDiedError, CheckpointWriteError))
        return stop(log, err, code=1 if failed else 2)
    except KeyboardInterrupt:
        return stop(log, interrupted_message(cfg, trainer), code=130)
    report_skipped_images(loader, log)
    log.info("done: %d iterations; checkpoints in %s/checkpoints", trainer.iteration,
             cfg.experiment_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
