"""Name maps from foreign ImageNet ResNet checkpoints to this package's backbone names.

One map per source (``--source`` of ``scripts/convert_weights.py``):

- ``gluoncv``: GluonCV ``.params`` files of the models ``gluoncv.model_zoo.get_model(arch)``
  builds, saved with ``save_parameters`` (structural names, ``layer1.0.conv1.weight``) or the
  older ``save_params`` (flat names, ``resnetv1b_layers1_conv0_weight``; translated through the
  GluonCV model built with ``pretrained=False``, which downloads nothing):
  ``resnet{18,34,50,101,152}_v1b`` -> variant v1b, ``resnet*_v1`` -> v1 (stride in the first
  1x1 conv; its conv biases are folded into the next BatchNorm; ImageNet mean/std pixels:
  ``backbone.pixel_stats=imagenet``), ``resnet{50,101,152}_v2`` -> v2 (the input
  BatchNorm and GluonCV's ImageNet mean/std are folded into ``bn_data``, so the v2 configs' raw
  0..255 pixels give the same features), ``resnext{50,101}_{32x4d,64x4d}`` -> resnext.
- ``msra``: MSRA ResNet v1 in MXNet (Caffe layer names, as the Deformable ConvNets /
  SimpleDet ``resnet-v1-{depth}`` files): ``conv1``, ``bn_conv1``, ``res2a_branch2a``,
  ``bn2a_branch2a``, ..., ``res2a_branch1``, ``bn2a_branch1``; blocks lettered a, b, c, ...
  (ResNet-101/152 name res3/res4 blocks ``a, b1, b2, ...`` as the Caffe prototxts) -> v1.
- ``mxnet``: the MXNet model zoo's symbolic checkpoints ``resnet-{depth}`` (v2) and
  ``resnext-{depth}-{g}x{w}d``, already in this package's names; their BatchNorm eps (2e-5)
  is folded into the moving variance.
- ``torchvision``: state dicts of ``torchvision.models.resnet{depth}`` (-> v1b) and
  ``resnext50_32x4d`` / ``resnext101_32x8d`` (-> resnext).

BatchNorm folds (the backbone's fixbn is ``BatchNorm(use_global_stats=True)`` over
``gamma``/``beta``/``moving_mean``/``moving_var`` with eps 1e-5, ``bn_data`` 2e-5): a conv bias
``b`` before a BatchNorm becomes ``moving_mean - b``; a source eps ``e`` becomes
``moving_var + e - eps``. Both are exact. Classifier entries (``fc``, ``output``, ``fc1``) are
ignored; any other file entry the map does not use, a backbone tensor the file lacks or a shape
that differs is a :class:`ConversionError` naming the tensors.
"""
import re
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SOURCES", "Arch", "ConversionError", "ConversionReport", "convert", "layer_map",
           "parse_arch", "target_shapes"]

SOURCES = ("gluoncv", "msra", "mxnet", "torchvision")
TARGET_EPS = 1e-5  # simpledet.models.backbone.normalizer fixbn
BN_DATA_EPS = 2e-5  # the v2 stem's bn_data
SOURCE_EPS = {"gluoncv": 1e-5, "msra": 1e-5, "mxnet": 2e-5, "torchvision": 1e-5}
# GluonCV's classifiers read images as (x / 255 - mean) / std.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_CLASSIFIER = {"gluoncv": r"^(fc|output|dense\d*)[._]", "torchvision": r"^fc\.",
               "msra": r"^fc1000_", "mxnet": r"^fc1_"}
_ARCH_FORMS = {
    "gluoncv": "resnet{18,34,50,101,152}_v1b, resnet{...}_v1, resnet{50,101,152}_v2, "
               "resnext{50,101}_{32x4d,64x4d}",
    "msra": "resnet-v1-{18,34,50,101,152}",
    "mxnet": "resnet-{18,34,50,101,152} (v2), resnext-{50,101,152}-{G}x{W}d",
    "torchvision": "resnet{18,34,50,101,152}, resnext50_32x4d, resnext101_32x8d",
}
_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
           152: (3, 8, 36, 3)}


class ConversionError(ValueError):
    """The source file does not fit the architecture: the message names the tensors."""


@dataclass(frozen=True)
class Arch:
    """A backbone this package builds (``backbone.variant`` / ``depth`` / ResNeXt shape).

    Attributes:
        variant: 'v1', 'v1b', 'v2' or 'resnext'.
        depth: 18, 34, 50, 101 or 152.
        groups / group_width: ResNeXt cardinality and first-stage width per group.
        source_layout: how the source lays out its units ('v1b', 'v1', 'v2', 'resnext',
            'msra', 'mxnet').
        pixel_stats: ``backbone.pixel_stats`` the weights need when it is not the variant's
            default ('auto'): GluonCV resnet*_v1 is variant v1 trained on ImageNet mean/std.
    """

    variant: str
    depth: int
    groups: int = 32
    group_width: int = 4
    source_layout: str = ""
    pixel_stats: str = "auto"

    @property
    def basic(self):
        return self.depth in (18, 34)

    @property
    def arch_name(self):
        """The target's name, as ``BackboneConfig.arch_name`` (the pretrain='auto' file)."""
        if self.variant == "v1":
            return f"resnet-v1-{self.depth}"
        if self.variant == "v1b":
            return f"resnet{self.depth}_v1b"
        if self.variant == "v2":
            return f"resnet-{self.depth}"
        return f"resnext-{self.depth}-{self.groups}x{self.group_width}d"

    @property
    def output_name(self):
        """The converted file's default name: ``arch_name`` (what pretrain='auto' reads) unless
        the weights need other pixel statistics than the variant's (then GluonCV's name)."""
        if self.pixel_stats != "auto":
            return f"resnet{self.depth}_v1"
        return self.arch_name

    def config_overrides(self):
        """The ``--set`` values a config needs for this backbone."""
        sets = [f"backbone.variant={self.variant}", f"backbone.depth={self.depth}"]
        if self.pixel_stats != "auto":
            sets.append(f"backbone.pixel_stats={self.pixel_stats}")
        if self.variant == "resnext":
            sets += [f"backbone.resnext_groups={self.groups}",
                     f"backbone.resnext_group_width={self.group_width}"]
        return sets


def parse_arch(source, arch):
    """The :class:`Arch` of a source's architecture name.

    Raises:
        ConversionError: unknown source or a name the source's map does not cover (the message
            lists the accepted forms).
    """
    if source not in SOURCES:
        raise ConversionError(f"unknown source {source!r}: expected one of {SOURCES}")
    name = arch.strip().lower()
    parsed = None
    if source == "gluoncv":
        if m := re.fullmatch(r"resnet(\d+)_v(1b|1|2)", name):
            variant = {"1b": "v1b", "1": "v1", "2": "v2"}[m.group(2)]
            parsed = Arch(variant, int(m.group(1)), source_layout=variant,
                          pixel_stats="imagenet" if variant == "v1" else "auto")
        elif m := re.fullmatch(r"resnext(\d+)_(\d+)x(\d+)d", name):
            parsed = Arch("resnext", int(m.group(1)), int(m.group(2)), int(m.group(3)),
                          source_layout="resnext")
    elif source == "msra":
        if m := re.fullmatch(r"resnet-v1-(\d+)", name):
            parsed = Arch("v1", int(m.group(1)), source_layout="msra")
    elif source == "mxnet":
        if m := re.fullmatch(r"resnet-(\d+)", name):
            parsed = Arch("v2", int(m.group(1)), source_layout="mxnet")
        elif m := re.fullmatch(r"resnext-(\d+)-(\d+)x(\d+)d", name):
            parsed = Arch("resnext", int(m.group(1)), int(m.group(2)), int(m.group(3)),
                          source_layout="mxnet")
    elif m := re.fullmatch(r"resnet(\d+)", name):
        parsed = Arch("v1b", int(m.group(1)), source_layout="v1b")
    elif m := re.fullmatch(r"resnext(\d+)_(\d+)x(\d+)d", name):
        parsed = Arch("resnext", int(m.group(1)), int(m.group(2)), int(m.group(3)),
                      source_layout="v1b")
    if parsed is None:
        hint = ""
        if source == "gluoncv" and re.fullmatch(r"resnet\d+_v1[c-e,s]", name):
            hint = " (the deep 3x3 stems of v1c/v1d/v1e/v1s are not built by this package)"
        raise ConversionError(f"--arch {arch!r} is not a {source} architecture this package "
                              f"imports{hint}; accepted: {_ARCH_FORMS[source]}")
    if parsed.source_layout == "v2" and parsed.basic:
        raise ConversionError(
            f"--arch {arch!r}: GluonCV's v2 basic units add the un-normalized input in res2's "
            f"first unit, where this package's v2 (as the MXNet model zoo's resnet-18/34) "
            f"has a projection of the normalized input; the two cannot be mapped exactly. "
            f"Use the v2 bottleneck depths (50, 101, 152) or --source mxnet files")
    if parsed.depth not in _DEPTHS or (parsed.variant == "resnext" and parsed.basic):
        raise ConversionError(f"--arch {arch!r}: depth {parsed.depth} is not built here "
                              f"(ResNet 18/34/50/101/152, ResNeXt 50/101/152)")
    return parsed


# --- our layers -------------------------------------------------------------------------------

def _our_layers(arch):
    """(layer, stage, unit, local) of every layer with parameters, in forward order.

    ``local`` names the layer inside its unit (conv1, bn1, ..., sc, sc_bn) or the stem
    (conv0, bn0, bn_data, final bn1 as 'bn_final'); stage/unit are 0 for the stem.
    """
    layers = []
    if arch.variant == "v2":
        layers.append(("bn_data", 0, 0, "bn_data"))
    layers += [("conv0", 0, 0, "conv0"), ("bn0", 0, 0, "bn0")]
    width = 64
    in_ch = width
    for stage, count in enumerate(_DEPTHS[arch.depth], start=1):
        out_ch = (width if arch.basic else 4 * width) * 2 ** (stage - 1)
        for unit in range(1, count + 1):
            stride = 2 if (unit == 1 and stage > 1) else 1
            project = unit == 1 and (arch.variant == "v2" or stride != 1 or in_ch != out_ch)
            if arch.variant == "v2":
                local = (["bn1", "conv1", "bn2", "conv2"]
                         + ([] if arch.basic else ["bn3", "conv3"]) + (["sc"] if project else []))
            else:
                local = (["conv1", "bn1", "conv2", "bn2"]
                         + ([] if arch.basic else ["conv3", "bn3"])
                         + (["sc", "sc_bn"] if project else []))
            layers += [(f"stage{stage}_unit{unit}_{n}", stage, unit, n) for n in local]
            in_ch = out_ch
    if arch.variant == "v2":
        layers.append(("bn1", 0, 0, "bn_final"))
    return layers


def _is_norm(local):
    return local.startswith("bn") or local == "sc_bn"


# Layer names inside a unit, per source layout.
_GLUON_BODY = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4, "conv3": 6, "bn3": 7}
_MSRA_BRANCH = {"conv1": "res{b}_branch2a", "bn1": "bn{b}_branch2a",
                "conv2": "res{b}_branch2b", "bn2": "bn{b}_branch2b",
                "conv3": "res{b}_branch2c", "bn3": "bn{b}_branch2c",
                "sc": "res{b}_branch1", "sc_bn": "bn{b}_branch1"}


def _msra_block(depth, stage, unit):
    """Caffe block names: 2a, 2b, ... ; ResNet-101/152 res3/res4: 3a, 3b1, 3b2, ..."""
    if depth >= 101 and stage in (2, 3) and unit > 1:
        return f"{stage + 1}b{unit - 1}"
    return f"{stage + 1}{chr(ord('a') + unit - 1)}"


def layer_map(arch):
    """{our layer name: source layer name} for :class:`Arch` ``arch`` (its source layout)."""
    layout = arch.source_layout
    mapping = {}
    for layer, stage, unit, local in _our_layers(arch):
        if layout in ("v1b",):  # GluonCV v1b and torchvision: attribute names
            src = {"conv0": "conv1", "bn0": "bn1"}.get(local)
            if src is None:
                unit_name = f"layer{stage}.{unit - 1}"
                src = {"sc": f"{unit_name}.downsample.0",
                       "sc_bn": f"{unit_name}.downsample.1"}.get(local, f"{unit_name}.{local}")
        elif layout in ("v1", "resnext"):  # Gluon model zoo ResNetV1 / GluonCV ResNeXt
            src = {"conv0": "features.0", "bn0": "features.1"}.get(local)
            if src is None:
                unit_name = f"features.{3 + stage}.{unit - 1}"
                src = ({"sc": f"{unit_name}.downsample.0",
                        "sc_bn": f"{unit_name}.downsample.1"}.get(local)
                       or f"{unit_name}.body.{_GLUON_BODY[local]}")
        elif layout == "v2":  # Gluon model zoo ResNetV2
            src = {"bn_data": "features.0", "conv0": "features.1", "bn0": "features.2",
                   "bn_final": "features.9"}.get(local)
            if src is None:
                unit_name = f"features.{4 + stage}.{unit - 1}"
                src = f"{unit_name}.downsample" if local == "sc" else f"{unit_name}.{local}"
        elif layout == "msra":
            src = {"conv0": "conv1", "bn0": "bn_conv1"}.get(local)
            if src is None:
                src = _MSRA_BRANCH[local].format(b=_msra_block(arch.depth, stage, unit))
        else:  # mxnet: our names are the model zoo's
            src = layer
        mapping[layer] = src
    return mapping


def _param_names(source, kind):
    """{our parameter suffix: source suffix} and the separator for a layer kind."""
    if source in ("msra", "mxnet"):
        return "_", ({"weight": "weight", "bias": "bias"} if kind == "conv" else
                     {p: p for p in ("gamma", "beta", "moving_mean", "moving_var")})
    if kind == "conv":
        return ".", {"weight": "weight", "bias": "bias"}
    affine = ("weight", "bias") if source == "torchvision" else ("gamma", "beta")
    return ".", {"gamma": affine[0], "beta": affine[1], "moving_mean": "running_mean",
                 "moving_var": "running_var"}


# --- shapes of our backbone ---------------------------------------------------------------

def target_shapes(arch):
    """{parameter or aux name: shape} of the backbone (c2..c5, and v2's final ``bn1``).

    Returns:
        (arg_shapes, aux_shapes) dicts.
    """
    import mxnet as mx

    from simpledet.models.backbone import Normalizer, ResNet

    net = ResNet(arch.variant, arch.depth, Normalizer("fixbn"), last_stage=3,
                 resnext_groups=arch.groups, resnext_group_width=arch.group_width)
    data = mx.sym.var("data")
    x = net.stem(data)
    for stage in (1, 2, 3):
        x = net.stage(x, stage, stride=1 if stage == 1 else 2)
    x = net.res5(x, stride=2)
    arg_shapes, _, aux_shapes = x.infer_shape(data=(1, 3, 64, 64))
    args = dict(zip(x.list_arguments(), arg_shapes))
    args.pop("data")
    return args, dict(zip(x.list_auxiliary_states(), aux_shapes))


# --- conversion -------------------------------------------------------------------------------

@dataclass
class ConversionReport:
    """What a conversion did.

    Attributes:
        source / arch: the source and its architecture name; target: ours (``arch_name``).
        converted: our tensors written.
        missing: our tensors whose source entry the file lacks (source names).
        unexpected: file entries the map does not use (classifier entries excluded).
        ignored: classifier (and torch bookkeeping) entries dropped on purpose.
        mismatched: 'ours <- source: file shape vs expected shape' lines.
        folds: one line per transformation applied besides renaming.
    """

    source: str
    arch: str
    target: str
    converted: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    ignored: list = field(default_factory=list)
    mismatched: list = field(default_factory=list)
    folds: list = field(default_factory=list)

    @property
    def ok(self):
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit=8):
        """Lines for the console."""
        lines = [f"{self.source} {self.arch} -> {self.target}: {len(self.converted)} tensors "
                 f"converted, {len(self.ignored)} classifier entries ignored"]
        for title, items in (("missing in the file", self.missing),
                             ("unexpected in the file", self.unexpected),
                             ("shape mismatch", self.mismatched)):
            if items:
                shown = ", ".join(items[:limit])
                more = f", ... ({len(items) - limit} more)" if len(items) > limit else ""
                lines.append(f"  {title}: {len(items)}: {shown}{more}")
        lines += [f"  folded: {line}" for line in self.folds]
        return "\n".join(lines)


def _strip_prefixes(params):
    """Drops MXNet's 'arg:' / 'aux:' key prefixes."""
    return {k.split(":", 1)[1] if k.startswith(("arg:", "aux:")) else k: v
            for k, v in params.items()}


def gluon_flat_to_structural(arch_name, names):
    """Maps GluonCV ``save_params`` names (flat: ``layers1_conv0_weight``, with or without the
    model's ``resnetv1b_`` prefix) to ``save_parameters`` names (``layer1.0.conv1.weight``),
    through the model GluonCV builds with ``pretrained=False`` (no download)."""
    import gluoncv

    net = gluoncv.model_zoo.get_model(arch_name, pretrained=False)
    by_id = {id(p): name for name, p in net._collect_params_with_prefix().items()}
    flat = {}
    for name, param in net.collect_params().items():
        local = name[len(net.prefix):] if name.startswith(net.prefix) else name
        flat[local] = by_id[id(param)]
    mapped = {}
    for name in names:
        local = name if name in flat else name.split("_", 1)[-1]  # drop 'resnetv1b_'-like
        mapped[name] = flat.get(local, name)
    return mapped


def convert(params, source, arch_name, *, source_eps=None, strict=True, bgr_input=False):
    """Renames and folds a source checkpoint into this package's backbone names.

    Args:
        params: {name: array-like} as read from the file ('arg:'/'aux:' prefixes allowed).
        source: one of :data:`SOURCES`.
        arch_name: the source's architecture name (see :func:`parse_arch`).
        source_eps: BatchNorm eps the source model used (default per source: 1e-5, the MXNet
            model zoo 2e-5).
        strict: unexpected (non-classifier) entries are an error too; missing tensors and
            shape mismatches always are.
        bgr_input: the source's first conv reads BGR images (Caffe): reverse its input channels
            for the RGB loader.

    Returns:
        (arg_params, aux_params, report): {our name: float32 numpy array} dicts and a
        :class:`ConversionReport`.

    Raises:
        ConversionError: unknown source/arch, missing tensors, shape mismatches or (strict)
            unexpected entries; the message names them.
    """
    arch = parse_arch(source, arch_name)
    eps = SOURCE_EPS[source] if source_eps is None else float(source_eps)
    params = {k: np.asarray(v.asnumpy() if hasattr(v, "asnumpy") else v, dtype=np.float32)
              for k, v in _strip_prefixes(params).items()}
    if source == "gluoncv" and params and not any("." in k for k in params):
        renamed = gluon_flat_to_structural(arch_name.strip().lower(), list(params))
        params = {renamed[k]: v for k, v in params.items()}
    report = ConversionReport(source=source, arch=arch_name, target=arch.arch_name)
    classifier = re.compile(_CLASSIFIER[source])
    report.ignored = sorted(k for k in params
                            if classifier.match(k) or k.endswith(".num_batches_tracked"))
    if source == "mxnet" and arch.variant == "resnext" and any(
            k.startswith("bn_data_") for k in params):
        raise ConversionError(
            f"{arch_name}: the file whitens the input with bn_data, which this package's "
            f"ResNeXt does not have (its loader normalizes with the ImageNet mean/std) and "
            f"which cannot be folded into conv0 exactly (zero padding); import the GluonCV "
            f"(--source gluoncv --arch resnext50_32x4d) or torchvision ResNeXt instead")
    arg_shapes, aux_shapes = target_shapes(arch)
    shapes = {**arg_shapes, **aux_shapes}
    mapping = layer_map(arch)
    layers = _our_layers(arch)
    used, out = set(), {}
    for layer, _, _, local in layers:
        kind = "bn" if _is_norm(local) else "conv"
        sep, names = _param_names(source, kind)
        for ours, theirs in names.items():
            target = f"{layer}_{ours}"
            if target not in shapes:
                continue  # conv bias: none in our graph, folded below
            src = f"{mapping[layer]}{sep}{theirs}"
            if src not in params:
                if layer == "bn_data" and ours in ("gamma", "beta"):
                    continue  # fixed (fix_gamma) / centred input BatchNorm
                report.missing.append(src)
                continue
            used.add(src)
            value = params[src]
            if value.shape != tuple(shapes[target]):
                report.mismatched.append(f"{target} <- {src}: file {value.shape} vs "
                                         f"expected {tuple(shapes[target])}")
                continue
            out[target] = value.copy()
        if kind == "conv":
            bias = f"{mapping[layer]}{sep}{names['bias']}"
            if bias in params:
                used.add(bias)
                out.setdefault(f"__bias__{layer}", params[bias])
    _apply_folds(arch, layers, out, shapes, eps, report, bgr_input)
    report.unexpected = sorted(k for k in params if k not in used and k not in report.ignored)
    problems = report.missing or report.mismatched or (strict and report.unexpected)
    if problems:
        raise ConversionError(_error_message(report, strict))
    report.converted = sorted(out)
    arg_params = {k: v for k, v in out.items() if k in arg_shapes}
    aux_params = {k: v for k, v in out.items() if k in aux_shapes}
    return arg_params, aux_params, report


def _error_message(report, strict):
    parts = []
    for title, items in (("missing in the file", report.missing),
                         ("with the wrong shape", report.mismatched),
                         ("unexpected in the file", report.unexpected if strict else [])):
        if items:
            parts.append(f"{len(items)} {title}: " + ", ".join(items[:5])
                         + (" ..." if len(items) > 5 else ""))
    return (f"not a {report.source} {report.arch} file (converting to {report.target}): "
            + "; ".join(parts) + " (is --arch the file's architecture?)")


def _next_norm(layers, index):
    """The BatchNorm that reads a conv's output alone: the next layer of the same unit when
    it is a norm (v1: conv1 -> bn1, sc -> sc_bn, conv0 -> bn0; v2: conv1 -> bn2, conv2 -> bn3),
    else None (v2's last conv and shortcut feed the residual sum)."""
    if index + 1 >= len(layers):
        return None
    _, stage, unit, _ = layers[index]
    name, next_stage, next_unit, local = layers[index + 1]
    if _is_norm(local) and (stage, unit) == (next_stage, next_unit) and local != "bn_data":
        return name
    return None


def _apply_folds(arch, layers, out, shapes, eps, report, bgr_input):
    """Conv biases -> moving means, eps -> moving variances, v2 input normalization ->
    bn_data, BGR -> RGB first conv; in place on ``out``."""
    folded_bias = []
    for index, (layer, _, _, local) in enumerate(layers):
        bias = out.pop(f"__bias__{layer}", None)
        if bias is None:
            continue
        norm = _next_norm(layers, index)
        if norm is None or f"{norm}_moving_mean" not in out:
            report.mismatched.append(f"{layer}: the source conv has a bias, and no BatchNorm "
                                     f"follows it here to fold it into")
            continue
        out[f"{norm}_moving_mean"] = out[f"{norm}_moving_mean"] - bias
        folded_bias.append(layer)
    if folded_bias:
        report.folds.append(f"conv biases into the next BatchNorm's moving_mean: "
                            f"{len(folded_bias)} convs")
    if arch.variant == "v2" and arch.source_layout == "v2" and "bn_data_moving_mean" in out:
        # GluonCV reads y = (x / 255 - m) / s; bn_data(y) = (y - mu) / sqrt(var + eps) + beta.
        # As a function of the raw pixels x that is one BatchNorm with mean 255 (m + s mu) and
        # std 255 s sqrt(var + eps), which the v2 configs' bn_data takes (raw 0..255 input).
        m, s = np.array(IMAGENET_MEAN, np.float32), np.array(IMAGENET_STD, np.float32)
        mu, var = out["bn_data_moving_mean"], out["bn_data_moving_var"]
        out["bn_data_moving_mean"] = (255.0 * (m + s * mu)).astype(np.float32)
        out["bn_data_moving_var"] = ((255.0 * s) ** 2 * (var + eps) - BN_DATA_EPS).astype(
            np.float32)
        out["bn_data_gamma"] = np.ones(3, np.float32)  # fix_gamma: ignored either way
        out.setdefault("bn_data_beta", np.zeros(3, np.float32))
        report.folds.append("GluonCV's ImageNet mean/std and its input BatchNorm into bn_data "
                            "(raw 0..255 pixels)")
    elif arch.variant == "v2":
        for name, default in (("bn_data_gamma", 1.0), ("bn_data_beta", 0.0)):
            out.setdefault(name, np.full(3, default, np.float32))
    eps_layers = 0
    for name in list(out):
        if name.endswith("_moving_var") and not name.startswith("bn_data_"):
            if eps != TARGET_EPS:
                out[name] = out[name] + np.float32(eps - TARGET_EPS)
                eps_layers += 1
            if np.any(out[name] + TARGET_EPS <= 0):
                report.mismatched.append(f"{name}: non-positive variance after the eps fold")
    if eps_layers:
        report.folds.append(f"BatchNorm eps {eps:g} -> {TARGET_EPS:g} into moving_var: "
                            f"{eps_layers} layers")
    if bgr_input:
        out["conv0_weight"] = out["conv0_weight"][:, ::-1].copy()
        report.folds.append("conv0 input channels reversed (BGR source, RGB loader)")
