"""Deformable convolution v1 / v2 through MXNet's own ops (Dai et al. 2017; Zhu et al. 2019).

``deformable_conv`` builds a plain 3x3-style conv's replacement: an offset conv on the same
input (same kernel, stride, padding, dilation) predicts, per output location, 2 * k * k
offsets per deformable group (v1) or those plus k * k modulation logits (v2, sigmoid -> mask
in (0, 1)); then ``contrib.DeformableConvolution`` (v1) or
``contrib.ModulatedDeformableConvolution`` (v2) samples the input at the shifted taps.

Offset/mask conv weights and bias are zero-initialised (their variables carry
``mx.init.Zero()``, which the detectors' initializer honours), so at initialisation the v1 conv
*is* the plain conv on the same weights and v2's is half of it (mask sigmoid(0) = 0.5, as in the
paper and detectron2).

Layouts (dg = deformable groups, k = kernel): offset (B, 2 * dg * k * k, H', W') as
(dy, dx) pairs per tap, group-major, the ops' layout; mask (B, dg * k * k, H', W').

Parameters: ``{name}_weight`` (the deformable conv, shaped like the plain conv's: a
pretrained plain conv loads into it), ``{name}_offset_weight`` / ``{name}_offset_bias`` (the
offset conv; for v2 it also outputs the mask logits, detectron2's single ``conv2_offset``).
"""
import mxnet as mx

__all__ = ["DCN_VERSIONS", "deformable_conv", "offset_channels"]

DCN_VERSIONS = (1, 2)


def offset_channels(version, kernel=3, deformable_groups=1):
    """Output channels of the offset conv: 2 * dg * k * k (v1), 3 * dg * k * k (v2: + mask)."""
    taps = deformable_groups * kernel * kernel
    return 2 * taps if version == 1 else 3 * taps


def deformable_conv(data, name, channels, kernel=3, stride=1, pad=None, dilate=1, groups=1,
                    version=2, deformable_groups=1, weight=None, im2col_step=64):
    """A deformable conv (no bias) with its zero-initialised offset (and mask) conv.

    Args:
        data: (B, C, H, W) Symbol.
        name: the layer name (``{name}_weight``, ``{name}_offset_*``, op names).
        channels: output channels.
        kernel, stride, dilate: square kernel size, stride and dilation.
        pad: padding; None keeps the size at stride 1: dilate * (kernel - 1) // 2.
        groups: groups of the conv itself (ResNeXt); C and channels divisible by it.
        version: 1 (DeformableConvolution) or 2 (ModulatedDeformableConvolution).
        deformable_groups: channel groups sharing one offset field.
        weight: the conv's weight Variable; None creates ``{name}_weight``.
        im2col_step: v2 only: images per im2col batch; MXNet requires the batch size B to be
            <= it or divisible by it. The default suits image batches (B <= 64); a batch of
            RoIs (the C4 layout's res5 in the box head: 1000 test RoIs) needs 1.

    Returns:
        (B, channels, ceil-like H', W') Symbol, sized exactly as ``mx.sym.Convolution`` with
        the same arguments.
    """
    if version not in DCN_VERSIONS:
        raise ValueError(f"DCN version must be one of {DCN_VERSIONS}, got {version!r}")
    if deformable_groups < 1:
        raise ValueError(f"deformable_groups must be >= 1, got {deformable_groups}")
    pad = dilate * (kernel - 1) // 2 if pad is None else pad
    geometry = dict(kernel=(kernel, kernel), stride=(stride, stride), pad=(pad, pad),
                    dilate=(dilate, dilate))
    offset_weight = mx.sym.var(f"{name}_offset_weight", init=mx.init.Zero())
    offset_bias = mx.sym.var(f"{name}_offset_bias", init=mx.init.Zero())
    offset = mx.sym.Convolution(data, weight=offset_weight, bias=offset_bias,
                                num_filter=offset_channels(version, kernel, deformable_groups),
                                name=f"{name}_offset", **geometry)
    if weight is None:
        weight = mx.sym.var(f"{name}_weight")
    common = dict(weight=weight, num_filter=channels, num_group=groups,
                  num_deformable_group=deformable_groups, no_bias=True, name=name, **geometry)
    if version == 1:
        return mx.sym.contrib.DeformableConvolution(data=data, offset=offset, **common)
    taps = deformable_groups * kernel * kernel
    shifts = mx.sym.slice_axis(offset, axis=1, begin=0, end=2 * taps, name=f"{name}_shift")
    mask = mx.sym.sigmoid(mx.sym.slice_axis(offset, axis=1, begin=2 * taps, end=3 * taps,
                                            name=f"{name}_mask_logit"), name=f"{name}_mask")
    return mx.sym.contrib.ModulatedDeformableConvolution(data=data, offset=shifts, mask=mask,
                                                         im2col_step=im2col_step, **common)
