"""Layers every component shares: the normalizer (fixed BN / BN / SyncBN / GN / none) and
deformable convolution (DCN v1 / v2)."""
from simpledet.models.layers.dcn import DCN_VERSIONS, deformable_conv, offset_channels
from simpledet.models.layers.normalizer import (
    NORMALIZER_KINDS,
    Normalizer,
    group_norm,
    make_normalizer,
)

__all__ = ["DCN_VERSIONS", "NORMALIZER_KINDS", "Normalizer", "deformable_conv", "group_norm",
           "make_normalizer", "offset_channels"]
