"""What detection_train.py and detection_test.py share before any graph is built: the config
(file + ``--set`` + ``--gpus``/``--cpus``), the synthetic dataset, the dataset check, and one
short error line instead of a traceback (``--debug`` prints the traceback too).
"""
import logging
import os
import sys
import traceback

logger = logging.getLogger("simpledet.cli")

_debug = False


class CliError(Exception):
    """A problem the user fixes from the command line (message printed as one error line)."""


def add_debug_argument(parser):
    """Adds ``--debug``: errors print their Python traceback before the error line."""
    parser.add_argument("--debug", action="store_true",
                        help="print the Python traceback (and a loader worker's) of an error")


def set_debug(enabled):
    """Turns the tracebacks of :func:`fail` on or off (the ``--debug`` flag)."""
    global _debug
    _debug = bool(enabled)


def start_cli(args):
    """What every command does first: ``--debug`` and console logging."""
    from simpledet.utils.logging import setup_logging

    set_debug(args.debug)
    setup_logging()


def fail(message, code=2):
    """Prints ``error: message`` to stderr; returns the exit code.

    With ``--debug`` (:func:`set_debug`), the exception being handled is printed first, with
    the traceback of the loader worker it came from when it carries one.
    """
    err = sys.exc_info()[1]
    if _debug and err is not None:
        traceback.print_exception(err, file=sys.stderr)
        worker_traceback = getattr(err, "worker_traceback", None)
        if worker_traceback:
            print(worker_traceback.rstrip(), file=sys.stderr)
    print(f"error: {message}", file=sys.stderr)
    return code


def load_cli_config(args):
    """The config of ``--config`` with ``--set`` and the context flags applied.

    Exits (code 2, one screen) on a bad config; raises CliError on bad context flags.
    """
    from simpledet.config import exit_on_config_error, load_config
    from simpledet.engine.contexts import context_overrides

    try:
        overrides = list(args.overrides) + context_overrides(args.gpus, args.cpus)
    except ValueError as err:
        raise CliError(str(err)) from None
    with exit_on_config_error():
        return load_config(args.config, overrides), overrides


def prepare_split(cfg, split):
    """Generates the synthetic dataset on first use and checks the split's files exist.

    Raises:
        CliError: the annotation file or image folder is missing or unreadable.
    """
    from simpledet.data.coco import DatasetError
    from simpledet.engine.build import DatasetMissingError, check_dataset_files, prepare_dataset

    try:
        prepare_dataset(cfg, log=lambda msg: print(msg, flush=True))
        check_dataset_files(cfg, split)
    except (DatasetMissingError, DatasetError) as err:
        raise CliError(str(err)) from None


def saved_config_path(cfg):
    """The resolved config a training run wrote into its experiment folder."""
    return os.path.join(cfg.experiment_dir, "config.json")


def load_experiment_config(args):
    """The config a trained experiment is used with (tester, demo, export): the command's
    config and overrides (:func:`load_cli_config`) resolved against the experiment's saved
    config (:func:`config_of_experiment`). Raises CliError on bad context flags."""
    cfg, overrides = load_cli_config(args)
    return config_of_experiment(cfg, overrides)


def config_of_experiment(cfg, overrides):
    """The config to test with: the experiment's saved one (what was trained), with the same
    command-line overrides, when the folder has one; else ``cfg``.

    Testing the config file instead would rebuild a different graph whenever the run was
    trained with ``--set`` changes to the model, or the file changed since. Differences
    between the file and the saved config are logged so nobody is surprised.
    """
    from simpledet.config import diff_configs, exit_on_config_error, format_diff, load_config

    saved = saved_config_path(cfg)
    if not os.path.isfile(saved):
        return cfg
    with exit_on_config_error():
        trained = load_config(saved, overrides)
    differences = diff_configs(cfg, trained, include_derived=False)
    if differences:
        logger.warning("using the experiment's saved config %s; the config file differs from "
                       "it in (file -> saved):\n%s", saved, format_diff(differences))
    return trained
