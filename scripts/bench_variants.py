"""Training-step cost of config variants, measured alternately in one process.

    python scripts/bench_variants.py --config C --size HxW [--iters N] [--threads T] \
        --variant NAME [KEY=VALUE ...] --variant NAME [KEY=VALUE ...] [--json OUT]

Each variant is the config with its ``--set``-style overrides (a variant without overrides is
the config itself); every variant is built and bound once, then the steps alternate (plain,
variant 1, variant 2, plain, ...) on the same synthetic batch as scripts/benchmark.py, so a
machine whose load changes during the run slows every variant alike. Reports the median wall
time and the median process CPU time (all threads) of a step and each variant's ratio to the
first. The CPU time is what a busy, shared CPU distorts least: it counts the work, not the
waiting. Runs on CPU (runtime.device cpu: DCNv2 takes its stock-op implementation there).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--size", default="256x320", metavar="HxW")
    parser.add_argument("--iters", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps per variant")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--variant", nargs="+", action="append", required=True,
                        metavar="NAME [KEY=VALUE]", help="a name, then its overrides")
    parser.add_argument("--json", default=None, metavar="OUT")
    args = parser.parse_args(argv)
    try:
        height, width = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        parser.error(f"--size {args.size!r}: expected HxW, e.g. 256x320")
    args.size = (height, width)
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import mxnet as mx

    from simpledet.benchmark import ours
    from simpledet.benchmark.settings import quiet_load_config
    from simpledet.benchmark.synthetic import make_images
    from simpledet.engine.build import build_detector

    height, width = args.size
    fixed = ["pretrain=none", f"input.short={min(args.size)}", f"input.long={max(args.size)}",
             "train.images_per_device=1", "runtime.device=cpu", "runtime.device_ids=(0,)",
             "runtime.kvstore=local", "runtime.num_machines=1"]
    steps, names = [], []
    with tempfile.TemporaryDirectory() as workdir:
        for name, *overrides in args.variant:
            cfg = quiet_load_config(args.config, list(overrides) + fixed)
            detector = build_detector(cfg)
            sample = make_images(1, height, width, cfg.num_classes, seed=cfg.seed)
            bucket = ours.bucket_of(cfg, height, width)
            _, step = ours.build_train_step(cfg, detector, mx.cpu(0), sample, bucket,
                                            os.path.join(workdir, name))
            for _ in range(args.warmup):
                step()
                mx.nd.waitall()
            steps.append(step)
            names.append(name)
            print(f"[bench_variants] built {name}", flush=True)
        wall = {n: [] for n in names}
        cpu = {n: [] for n in names}
        for i in range(args.iters):
            for name, step in zip(names, steps):
                w0, c0 = time.perf_counter(), time.process_time()
                step()
                mx.nd.waitall()
                wall[name].append(time.perf_counter() - w0)
                cpu[name].append(time.process_time() - c0)
                print(f"[bench_variants] {i + 1}/{args.iters} {name}: wall "
                      f"{wall[name][-1]:.3f} s, cpu {cpu[name][-1]:.3f} s", flush=True)
    base = names[0]
    rows = {n: {"wall_s": statistics.median(wall[n]), "cpu_s": statistics.median(cpu[n]),
                "wall_times_s": wall[n], "cpu_times_s": cpu[n]} for n in names}
    print(f"{'variant':<16} {'wall s/step':>12} {'cpu s/step':>11} {'wall x':>7} {'cpu x':>6}")
    for n in names:
        r, b = rows[n], rows[base]
        print(f"{n:<16} {r['wall_s']:>12.3f} {r['cpu_s']:>11.3f} "
              f"{r['wall_s'] / b['wall_s']:>7.2f} {r['cpu_s'] / b['cpu_s']:>6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": args.config, "size": list(args.size), "iters": args.iters,
                       "variants": {n: {"overrides": o, **rows[n]}
                                    for (n, *o) in args.variant}}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
