"""Initial weights from a local MXNet .params file; never a download.

Accepted layouts (``mx.nd.load`` dicts): MXNet checkpoints with 'arg:<name>' / 'aux:<name>'
keys (SimpleDet's pretrain_model/*.params) and plain names (Gluon ``save_parameters``, as
GluonCV's backbones), where a name is an aux state if the model lists it as one. Names must
match the model's parameter names; the report says which model parameters the file does not
cover (they keep the initializer's values) and which file entries the model does not use.
"""
import logging
import os
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
        missing: model parameters (arguments and aux states) the file does not have.
        unexpected: file entries the model has no parameter for (e.g. an ImageNet classifier).
    """

    path: str
    loaded: list = field(default_factory=list)
    missing: list = field(default_factory=list)
    unexpected: list = field(default_factory=list)

    def summary(self, limit=10):
        """A few lines for the log."""
        def names(items):
            shown = ", ".join(items[:limit])
            return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")

        lines = [f"pretrained {self.path}: loaded {len(self.loaded)} parameters"]
        if self.missing:
            lines.append(f"  missing in the file (initialized instead): {len(self.missing)}: "
                         f"{names(self.missing)}")
        if self.unexpected:
            lines.append(f"  unused entries of the file: {len(self.unexpected)}: "
                         f"{names(self.unexpected)}")
        return "\n".join(lines)


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


def load_pretrained(path, arg_names, aux_names, setting="auto"):
    """Reads a .params file and keeps the entries the model has.

    Args:
        path: the .params file.
        arg_names: the model's trainable/fixed parameter names (not its data inputs).
        aux_names: the model's auxiliary state names (BatchNorm moving statistics).
        setting: the config's pretrain value, for messages.

    Returns:
        (arg_params, aux_params, PretrainedReport), the params as name -> NDArray.

    Raises:
        PretrainedError: the file is missing or not an MXNet parameter file.
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
    report = PretrainedReport(
        path=str(path),
        loaded=sorted(arg_params) + sorted(aux_params),
        missing=sorted((arg_names - set(arg_params)) | (aux_names - set(aux_params))),
        unexpected=sorted([f"arg:{k}" for k in file_args if k not in arg_names]
                          + [f"aux:{k}" for k in file_aux if k not in aux_names]))
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
