"""Moved to :mod:`simpledet.models.layers.normalizer` (every component's normalizer); this
name stays for existing imports."""
from simpledet.models.layers.normalizer import (  # noqa: F401
    NORMALIZER_KINDS,
    Normalizer,
    group_norm,
    make_normalizer,
)

__all__ = ["NORMALIZER_KINDS", "Normalizer", "group_norm", "make_normalizer"]
