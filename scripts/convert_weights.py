"""Converts an ImageNet ResNet checkpoint of another toolbox into this package's backbone names.

Usage:
    python scripts/convert_weights.py --source gluoncv --arch resnet50_v1b \\
        resnet50_v1b-0ecdba34.params pretrain_model/resnet50_v1b-0000.params
    python scripts/convert_weights.py --source msra --arch resnet-v1-101 IN.params
    python scripts/convert_weights.py --source torchvision --arch resnet50 resnet50.pth

Sources and architectures (see simpledet/engine/weight_maps.py): gluoncv resnet*_v1b /
resnet*_v1 / resnet*_v2 / resnext{50,101}_{32x4d,64x4d}; msra resnet-v1-*; mxnet (model zoo)
resnet-* (v2) / resnext-*; torchvision resnet* / resnext* (.pth, needs torch). OUT defaults to
pretrain_model/<arch_name>-0000.params, the file a config's pretrain='auto' reads; the script
prints the --set values a config needs for the file (variant, depth, ...). A file that
does not fit the architecture (missing, unexpected or misshapen tensors) is an error naming
them; nothing is written then. Exit status 0 on success, 2 on an error.
"""
import argparse
import sys

from simpledet.engine.pretrained import PretrainedError, convert_weights_file
from simpledet.engine.weight_maps import SOURCES, ConversionError, parse_arch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", required=True, choices=SOURCES,
                        help="the toolbox the file comes from")
    parser.add_argument("--arch", required=True,
                        help="the source's architecture name, e.g. resnet50_v1b (gluoncv), "
                             "resnet-v1-50 (msra), resnet-50 (mxnet), resnet50 (torchvision)")
    parser.add_argument("src", help="the source checkpoint (.params, or .pth for torchvision)")
    parser.add_argument("dst", nargs="?", help="output .params (default: "
                        "pretrain_model/<arch_name>-0000.params)")
    parser.add_argument("--source-eps", type=float, default=None,
                        help="BatchNorm eps of the source model (default: 1e-5; mxnet 2e-5)")
    parser.add_argument("--bgr-input", action="store_true",
                        help="the source's first conv reads BGR images (Caffe): reverse its "
                             "input channels for this package's RGB loader")
    parser.add_argument("--allow-unexpected", action="store_true",
                        help="ignore file entries the map does not use (missing tensors and "
                             "shape mismatches stay errors)")
    args = parser.parse_args(argv)
    try:
        arch = parse_arch(args.source, args.arch)
        dst = args.dst or f"pretrain_model/{arch.output_name}-0000.params"
        report = convert_weights_file(args.src, dst, args.source, args.arch,
                                      source_eps=args.source_eps, bgr_input=args.bgr_input,
                                      strict=not args.allow_unexpected)
    except (ConversionError, PretrainedError) as err:
        print(f"convert_weights: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"wrote {dst}")
    print("use it with: --set " + " ".join(arch.config_overrides() + [f"pretrain={dst}"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
