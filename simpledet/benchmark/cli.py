"""The benchmark command line: options, one worker process per model, the report.

    python scripts/benchmark.py --config C [--precision fp32|bf16|fp16] [--batch B]
        [--size HxW] [--iters N] [--warmup W] [--threads T] [--peer gluoncv]
        [--json OUT] [--plot OUT.png] [--profile OUT] [--set KEY=VALUE ...] [--gpus ID]

The parent checks the options and the config, then runs the same arguments again as
``python -m simpledet.benchmark ... --worker ours|backbone|peer|profile``, once per
measurement, each with OMP_NUM_THREADS=T, and reads the worker's JSON result from a temporary
file (stdout stays free for the workers' progress lines).
"""
import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from simpledet.benchmark.worker import ROLES

WORKER_FLAG = "--worker"


class WorkerFailed(Exception):
    """A worker process exited with an error (its own output says why)."""


class OneLineParser(argparse.ArgumentParser):
    """Bad arguments give one 'error: ...' line and exit code 2 (no usage screen)."""

    def error(self, message):
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser():
    from simpledet.config import add_config_arguments
    from simpledet.engine.contexts import add_context_arguments

    parser = OneLineParser(
        prog="benchmark.py", description="Training and inference speed and memory of a config, "
        "optionally side by side with GluonCV's closest model, measured in the same run.")
    add_config_arguments(parser)
    add_context_arguments(parser)
    parser.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default=None,
                        help="default: the config's")
    parser.add_argument("--batch", type=int, default=None,
                        help="images per training step and inference batch for throughput "
                             "(default: the config's train.images_per_device)")
    parser.add_argument("--size", default=None, metavar="HxW",
                        help="image height x width, e.g. 600x800 (default: the config's "
                             "input.short x input.long)")
    parser.add_argument("--iters", type=int, default=10, help="timed calls (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    parser.add_argument("--threads", type=int, default=None,
                        help="OpenMP threads of each model (default: all cores)")
    parser.add_argument("--peer", default="none", help="'gluoncv' to compare with GluonCV")
    parser.add_argument("--json", default=None, metavar="OUT", help="write the results here")
    parser.add_argument("--plot", default=None, metavar="OUT.png", help="write a bar chart")
    parser.add_argument("--profile", default=None, metavar="OUT",
                        help="write MXNet's per-operator table of our training step")
    parser.add_argument(WORKER_FLAG, choices=ROLES, default=None,
                        help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    return parser


def worker_command(argv, role, out_path):
    """This command line again, as a worker of ``role`` writing to ``out_path``."""
    return [sys.executable, "-m", "simpledet.benchmark", *argv, WORKER_FLAG, role,
            "--worker-out", out_path]


def worker_env(threads):
    """The parent's environment with the thread count fixed and this checkout importable."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def run_worker(argv, role, threads, workdir):
    """Runs one worker to completion; returns its result dict.

    Raises:
        WorkerFailed: the worker exited with an error.
    """
    import json

    out_path = os.path.join(workdir, f"{role}.json")
    proc = subprocess.run(worker_command(argv, role, out_path), env=worker_env(threads))
    if proc.returncode != 0 or not os.path.isfile(out_path):
        raise WorkerFailed(f"the '{role}' measurement failed (exit code {proc.returncode}); "
                           "see its output above")
    with open(out_path) as f:
        return json.load(f)


def prepare_output_folders(args):
    """Creates the folders of --json/--plot/--profile before anything is measured.

    Raises:
        SettingsError: a folder cannot be created.
    """
    from simpledet.benchmark.settings import SettingsError

    for option in ("json", "plot", "profile"):
        path = getattr(args, option)
        folder = os.path.dirname(os.path.abspath(path)) if path else None
        if folder:
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as err:
                raise SettingsError(f"--{option} {path}: cannot create {folder}: "
                                    f"{err.strerror}") from None


def roles(settings):
    """The workers to run, in order (the profile last: it only writes its table)."""
    return (["ours", "backbone"] + (["peer"] if settings.peer == "gluoncv" else [])
            + (["profile"] if settings.profile else []))


def run_parent(argv, args, settings):
    """Runs every worker, prints the report, writes the requested files; returns 0."""
    from simpledet.benchmark import report as rep
    from simpledet.benchmark.measure import progress

    cfg = settings.load_config()  # fails here, before any worker, on a bad combination
    if settings.peer == "gluoncv":
        from simpledet.benchmark.gluoncv_peer import model_name

        model_name(cfg)  # SettingsError when the config's family has no GluonCV peer
    prepare_output_folders(args)
    if settings.device_note:
        progress(settings.device_note)
    results = {}
    with tempfile.TemporaryDirectory(prefix="simpledet-benchmark-") as workdir:
        for role in roles(settings):
            progress(f"measuring {role} in a worker process ({settings.threads} threads)")
            results[role] = run_worker(argv, role, settings.threads, workdir)
    report = rep.combine(settings, cfg, results)
    print(rep.format_report(report), flush=True)
    if args.json:
        rep.write_json(report, args.json)
        progress(f"results written to {args.json}")
    if args.plot:
        rep.write_plot(report, args.plot)
        progress(f"chart written to {args.plot}")
    return 0


def run_as_worker(args, settings):
    from simpledet.benchmark import worker

    worker.write_result(worker.run_role(args.worker, settings), args.worker_out)
    return 0


def main(argv=None):
    """Entry point; returns the exit code (2 for bad options or config, 1 if a run failed)."""
    from simpledet.benchmark.settings import SettingsError, resolve_settings
    from simpledet.config import exit_on_config_error

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        with exit_on_config_error():
            settings = resolve_settings(args)
            if args.worker:
                return run_as_worker(args, settings)
            return run_parent(argv, args, settings)
    except SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except WorkerFailed as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
