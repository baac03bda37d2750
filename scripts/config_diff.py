"""Prints the fields (and derived values) that differ between two config files.

Usage:
    python scripts/config_diff.py config/faster_r50v1_fpn_1x.py config/faster_r101v1_fpn_1x.py
    python scripts/config_diff.py A.py B.py --fields-only --set-b train.images_per_device=1

One line per differing dotted key: ``key: value_in_A -> value_in_B`` (``key (derived): ...``
for computed values). Exit status 0 whether or not they differ; 2 on a config error.
"""
import argparse

from simpledet.config import diff_configs, exit_on_config_error, format_diff, load_config


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config_a", help="first config file (.py or dumped .json)")
    parser.add_argument("config_b", help="second config file")
    parser.add_argument("--fields-only", action="store_true",
                        help="hide derived values (lr, steps, strides, ...)")
    for side in ("a", "b"):
        parser.add_argument(f"--set-{side}", dest=f"overrides_{side}", action="extend",
                            nargs="+", default=[], metavar="KEY=VALUE",
                            help=f"override applied to config {side.upper()} before diffing")
    args = parser.parse_args(argv)
    with exit_on_config_error():
        cfg_a = load_config(args.config_a, args.overrides_a)
        cfg_b = load_config(args.config_b, args.overrides_b)
    differences = diff_configs(cfg_a, cfg_b, include_derived=not args.fields_only)
    print(f"--- {args.config_a}\n+++ {args.config_b}")
    print(format_diff(differences) if differences else "(no differences)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
