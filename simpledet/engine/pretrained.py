"""Initial weights from a local MXNet .params file; never a download.

Accepted layouts (``mx.nd.load`` dicts): MXNet checkpoints with 'arg:<name>' / 'aux:<name>'
keys (SimpleDet's pretrain_model/*.params) and plain names (Gluon ``save_parameters``, as
GluonCV's backbones), where a name is an aux state if the model lists it as one. Names must
match the model's parameter names.

Strictness (config ``pretrain_strict``, default True). A pretrained file is a backbone's, so:

- **backbone** parameters must all be in the file: a missing one is a :class:`PretrainedError`
  naming it (a renamed layer or the wrong variant's file would otherwise silently train the
  backbone from scratch);
- **head** parameters (everything that is not backbone: neck ``fpn_``, RPN ``rpn_``, box head
  ``bbox_``) are expected to be missing and keep the initializer's values;
- an entry whose shape differs from the model's is an error, backbone or head
  (:func:`fit_shapes`, at bind time, when the shapes are known).

``pretrain_strict=False`` allows partial loads: missing backbone parameters are initialized
and entries of the wrong shape dropped (initialized too); both are still reported in the log.

How "backbone" is recognised: by name. The detector's ``backbone_param_patterns()`` gives
anchored regular expressions over the layer names the backbone builder creates (for a ResNet
``^(bn_data|conv0|bn0|bn1|stage[1-4]_unit[0-9]+)_``, see
``simpledet.models.backbone.ResNet.param_patterns``). Backbone parameters carry no component
prefix (their names are the pretrained files'), heads always do, so the two cannot collide. In
the C4 layout res5 (``stage4_*``, v2's ``bn1``) runs inside the C5 box head but is built by the
backbone's ``res5()`` with the backbone's names and comes from the same pretrained classifier:
it counts as backbone.

Foreign checkpoints (GluonCV, MSRA, MXNet model zoo, torchvision) are converted once into this
layout by ``scripts/convert_weights.py`` (:func:`convert_weights_file`; the name maps and
BatchNorm folds are in :mod:`simpledet.engine.weight_maps`). A file in such a layout given
directly as ``pretrain`` fails with a message that names the converter command.
"""
import logging
import os
import re
from dataclasses import dataclass, field

from simpledet.engine.checkpoint import split_prefixed

logger = logging.getLogger(__name__)


class PretrainedError(RuntimeError):
    """The pretrained file is missing, unreadable or does not fit the model."""


@dataclass
class PretrainedReport:
    """What loading a pretrained file did.

    Attributes:
        path: the file.
        loaded: model parameter names taken from the file.
        missing: backbone parameters (arguments and aux states) the file does not have; an
            error unless strict is off.
        head: head parameters the file does not have (expected: they are initialized).
        unexpected: file entries the model has no parameter for (e.g. an ImageNet classifier).
        strict: whether missing backbone parameters were an error (``pretrain_strict``).
    """

    path: str
    loaded: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    head: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)
    strict: bool = True

    def summary(self, limit=10):
        """A few lines for the log."""
        lines = [f"pretrained {self.path}: loaded {len(self.loaded)} parameters"]
        if self.missing:
            lines.append(f"  backbone parameters missing in the file (initialized instead, "
                         f"pretrain_strict=False): {len(self.missing)}: "
                         f"{_names(self.missing, limit)}")
        if self.head:
            lines.append(f"  head parameters initialized (not in a backbone file): "
                         f"{len(self.head)}: {_names(self.head, limit)}")
        if self.unexpected:
            lines.append(f"  unused entries of the file: {len(self.unexpected)}: "
                         f"{_names(self.unexpected, limit)}")
        return "\n".join(lines)


def _names(items, limit):
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def is_backbone_param(name, patterns):
    """True when one of the anchored regexes ``patterns`` matches ``name`` from its start."""
    return any(re.match(p, name) for p in patterns)


def missing_pretrained_message(path, setting="auto"):
    """The error text for an absent pretrained file."""
    return (f"pretrained weights not found: {path} (config pretrain={setting!r}). Place the "
            f"backbone's ImageNet .params file there, point to another one with "
            f"--set pretrain=/path/to/weights.params, or train from scratch with "
            f"--set pretrain=none (then prefer backbone.normalizer=bn or gn)")


def check_pretrained_exists(path, setting="auto"):
    """Raises PretrainedError naming the path when a configured pretrained file is absent."""
    if path is not None and not os.path.isfile(path):
        raise PretrainedError(missing_pretrained_message(path, setting))


def load_pretrained(path, arg_names, aux_names, setting="auto", *, backbone_patterns,
                    strict=True):
    """Reads a .params file and keeps the entries the model has.

    Args:
        path: the .params file.
        arg_names: the model's trainable/fixed parameter names (not its data inputs).
        aux_names: the model's auxiliary state names (BatchNorm moving statistics).
        setting: the config's pretrain value, for messages.
        backbone_patterns: anchored regexes of the backbone's parameter names (the detector's
            ``backbone_param_patterns()``); every other parameter is a head parameter.
        strict: a backbone parameter missing in the file is an error (``pretrain_strict``);
            False initializes it and reports it.

    Returns:
        (arg_params, aux_params, PretrainedReport), the params as name -> NDArray.

    Raises:
        PretrainedError: the file is missing or not an MXNet parameter file, or (strict) it
            lacks backbone parameters (the message names them).
    """
    import mxnet as mx

    check_pretrained_exists(path, setting)
    try:
        loaded = mx.nd.load(str(path))
    except mx.base.MXNetError as err:
        raise PretrainedError(f"{path}: not a readable MXNet .params file "
                              f"({str(err).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise PretrainedError(f"{path}: expected a dict of named arrays, got a list of "
                              f"{len(loaded)} unnamed arrays")
    file_args, file_aux, plain = split_prefixed(loaded)
    arg_names, aux_names = set(arg_names), set(aux_names)
    for name, value in plain.items():  # plain names: decide by the model's own lists
        (file_aux if name in aux_names else file_args)[name] = value
    arg_params = {k: v for k, v in file_args.items() if k in arg_names}
    aux_params = {k: v for k, v in file_aux.items() if k in aux_names}
    not_covered = sorted((arg_names - set(arg_params)) | (aux_names - set(aux_params)))
    report = PretrainedReport(
        path=str(path),
        loaded=sorted(arg_params) + sorted(aux_params),
        missing=[n for n in not_covered if is_backbone_param(n, backbone_patterns)],
        head=[n for n in not_covered if not is_backbone_param(n, backbone_patterns)],
        unexpected=sorted([f"arg:{k}" for k in file_args if k not in arg_names]
                          + [f"aux:{k}" for k in file_aux if k not in aux_names]),
        strict=bool(strict))
    if strict and report.missing:
        foreign = guess_foreign_layout(list(file_args) + list(file_aux))
        if foreign:
            raise PretrainedError(
                f"{path}: looks like a {foreign} checkpoint, not this package's backbone "
                f"names ({len(report.missing)} backbone parameters missing, e.g. "
                f"{_names(report.missing, 3)}); convert it first: python "
                f"scripts/convert_weights.py --source {foreign} --arch ARCH {path} OUT.params")
        raise PretrainedError(
            f"{path}: {len(report.missing)} backbone parameter(s) are not in the file: "
            f"{_names(report.missing, 8)} (loaded {len(report.loaded)}, "
            f"{len(report.unexpected)} unused entries{': ' if report.unexpected else ''}"
            f"{_names(report.unexpected, 3)}). Use the pretrained file of this backbone "
            f"(config pretrain={setting!r}), or allow a partial load with "
            f"--set pretrain_strict=false")
    return arg_params, aux_params, report


def check_shapes(params, expected_shapes, path):
    """Raises PretrainedError listing entries whose shape differs from the model's.

    Args:
        params: name -> NDArray from the file.
        expected_shapes: name -> shape tuple of the bound model.
        path: the file, for the message.
    """
    bad = [f"{name}: file {tuple(value.shape)} vs model {tuple(expected_shapes[name])}"
           for name, value in sorted(params.items())
           if name in expected_shapes and tuple(value.shape) != tuple(expected_shapes[name])]
    if bad:
        raise PretrainedError(f"{path}: {len(bad)} parameter(s) have the wrong shape: "
                              + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""))


def fit_shapes(arg_params, aux_params, expected_shapes, path, strict=True):
    """Checks initial parameters against the bound model's shapes.

    Args:
        arg_params, aux_params: name -> NDArray (e.g. from :func:`load_pretrained`).
        expected_shapes: name -> shape tuple of the bound model.
        path: the file, for messages.
        strict: entries of the wrong shape are an error; False drops them (they are
            initialized) with a warning naming them.

    Returns:
        (arg_params, aux_params) without the dropped entries.

    Raises:
        PretrainedError: (strict) an entry's shape differs from the model's.
    """
    if strict:
        try:
            check_shapes({**arg_params, **aux_params}, expected_shapes, path)
        except PretrainedError as err:
            raise PretrainedError(f"{err}. Use the pretrained file of this model, or initialize "
                                  f"them instead with --set pretrain_strict=false") from None
        return arg_params, aux_params

    def fits(name, value):
        return name not in expected_shapes or tuple(value.shape) == tuple(expected_shapes[name])

    dropped = sorted(f"{name}: file {tuple(value.shape)} vs model {tuple(expected_shapes[name])}"
                     for name, value in {**arg_params, **aux_params}.items()
                     if not fits(name, value))
    if dropped:
        logger.warning("%s: %d entries have the wrong shape and are initialized instead "
                       "(pretrain_strict=False): %s", path, len(dropped), _names(dropped, 5))
    return ({k: v for k, v in arg_params.items() if fits(k, v)},
            {k: v for k, v in aux_params.items() if fits(k, v)})


# --- foreign checkpoints ------------------------------------------------------------------------

_FOREIGN_MARKERS = (("torchvision", r"^layer[1-4]\.\d+\.bn\d\.weight$"),
                    ("gluoncv", r"^(layer[1-4]\.\d+\.|features\.\d+\.|resnetv1b_|"
                                r"layers[1-4]_)"),
                    ("msra", r"^(bn_conv1|res2a_branch2a)_"))


def guess_foreign_layout(names):
    """The source (weight_maps.SOURCES) whose names ``names`` look like, or None."""
    for source, pattern in _FOREIGN_MARKERS:
        if any(re.match(pattern, n) for n in names):
            return source
    return None


def read_weights_file(path, source):
    """{name: numpy array} of a source checkpoint file.

    Args:
        path: an MXNet ``.params`` file, or for ``source='torchvision'`` a ``torch.save`` state
            dict (``.pth``; a dict holding it under 'state_dict' or 'model' works too).
        source: one of ``weight_maps.SOURCES``.

    Raises:
        PretrainedError: missing or unreadable file, torch not installed (one line).
    """
    if not os.path.isfile(path):
        raise PretrainedError(f"weights file not found: {path}")
    if source == "torchvision" and not str(path).endswith(".params"):
        try:
            import torch
        except ImportError:
            raise PretrainedError(f"{path}: reading a torchvision .pth file needs PyTorch, "
                                  f"which is not installed (pip install torch)") from None
        try:
            state = torch.load(str(path), map_location="cpu")
        except Exception as err:  # noqa: BLE001 - any torch failure is an unreadable file
            raise PretrainedError(f"{path}: not a readable torch file ({err})") from None
        for key in ("state_dict", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
        if not isinstance(state, dict):
            raise PretrainedError(f"{path}: expected a state dict, got {type(state).__name__}")
        return {k.removeprefix("module."): v.detach().cpu().numpy() for k, v in state.items()
                if hasattr(v, "detach")}
    import mxnet as mx

    try:
        loaded = mx.nd.load(str(path))
    except mx.base.MXNetError as err:
        raise PretrainedError(f"{path}: not a readable MXNet .params file "
                              f"({str(err).splitlines()[0]})") from None
    if not isinstance(loaded, dict):
        raise PretrainedError(f"{path}: expected a dict of named arrays, got a list of "
                              f"{len(loaded)} unnamed arrays")
    return {k: v.asnumpy() for k, v in loaded.items()}


def import_weights(path, source, arch, **options):
    """Reads a foreign checkpoint and converts it to this package's backbone names.

    Args:
        path: the source file (see :func:`read_weights_file`).
        source / arch: the source and its architecture name (``weight_maps.parse_arch``).
        **options: ``source_eps``, ``strict``, ``bgr_input`` of ``weight_maps.convert``.

    Returns:
        (arg_params, aux_params, report): {name: NDArray} dicts and a
        ``weight_maps.ConversionReport``.

    Raises:
        PretrainedError: unreadable file, or a file that does not fit ``arch`` (the message
            names the missing, unexpected and misshapen tensors).
    """
    import mxnet as mx

    from simpledet.engine.weight_maps import ConversionError, convert

    params = read_weights_file(path, source)
    try:
        arg_params, aux_params, report = convert(params, source, arch, **options)
    except ConversionError as err:
        raise PretrainedError(f"{path}: {err}") from None
    return ({k: mx.nd.array(v) for k, v in arg_params.items()},
            {k: mx.nd.array(v) for k, v in aux_params.items()}, report)


def convert_weights_file(src, dst, source, arch, **options):
    """Converts ``src`` and writes ``dst`` ('arg:'/'aux:' keys, this package's names), via a
    temporary file and a rename. Returns the ``weight_maps.ConversionReport``."""
    from simpledet.engine.checkpoint import save_params

    arg_params, aux_params, report = import_weights(src, source, arch, **options)
    folder = os.path.dirname(os.path.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(dst)}.tmp")
    save_params(tmp, arg_params, aux_params)
    os.replace(tmp, dst)
    return report
