"""The backbone contract.

A backbone maps the image batch to named feature maps with known strides (detectron2's
ShapeSpec idea): ``{"c2": (B, C2, H/4, W/4), ..., "c5": (B, C5, H/32, W/32)}``, sizes rounded
up (every stride-2 layer maps n to ceil(n / 2)), which is what
``simpledet.data.anchor_target.feature_levels`` assumes.

Parameter names are the checkpoint format: a backbone names its parameters exactly as the
pretrained files of its variant do (no component prefix), so ``Module.init_params`` can load
them by name.
"""
import re
from typing import ClassVar

__all__ = ["Backbone", "check_anchored", "select_params"]


class Backbone:
    """Base class of backbones.

    Attributes:
        strides: {feature name: stride in input pixels} of the features get_features returns.
    """

    strides: ClassVar[dict] = {}

    def get_features(self, data):
        """Builds the backbone on ``data``.

        Args:
            data: (B, 3, H, W) float32 Symbol, normalized pixels.

        Returns:
            dict {name: Symbol (B, C, ceil(H / stride), ceil(W / stride))} for every name in
            ``self.strides``.
        """
        raise NotImplementedError

    def fixed_param_patterns(self):
        """Anchored regular expressions (``re.match`` against full parameter names) of the
        parameters that must not be trained (frozen stages, frozen normalizer affines)."""
        raise NotImplementedError

    def param_patterns(self):
        """Anchored regular expressions matching every parameter and aux state this backbone
        creates (also layers it builds inside a head, as res5 in the C5 box head) and no
        head parameter: the names a pretrained backbone file must hold
        (simpledet.engine.pretrained, ``pretrain_strict``)."""
        raise NotImplementedError


def check_anchored(patterns):
    """Raises ValueError unless every pattern starts with '^' and compiles.

    An unanchored pattern such as ``"gamma"`` would match any name containing it (SimpleDet's
    substring rule froze every BatchNorm of every head that way); anchored patterns say exactly
    which layers they mean.
    """
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern.startswith("^"):
            raise ValueError(f"fixed-parameter pattern {pattern!r} must be a regular expression "
                             f"anchored with '^' (e.g. '^stage1_'), not a substring")
        re.compile(pattern)
    return list(patterns)


def select_params(names, patterns):
    """The names (in order) that one of the anchored ``patterns`` matches from the start.

    Args:
        names: parameter names, e.g. ``symbol.list_arguments()``.
        patterns: anchored regexes (checked by :func:`check_anchored`).

    Returns:
        list of the matching names.
    """
    compiled = [re.compile(p) for p in check_anchored(patterns)]
    return [n for n in names if any(c.match(n) for c in compiled)]
