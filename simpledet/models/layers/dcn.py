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

Two implementations with the same parameters and the same values (``impl``):

- 'op': MXNet's contrib ops. In MXNet 1.9.1 ``ModulatedDeformableConvolution`` has no CPU
  backward ("only implemented in GPU"); ``DeformableConvolution`` (v1) has both.
- 'sampler' (v2 only): a composite of stock ops with CPU and GPU kernels for both passes: per tap,
  ``BilinearSampler`` reads the input at the shifted positions (zero outside, as the ops), the
  v2 mask multiplies it, and the k * k sampled maps, stacked channel-major, go through one 1x1
  conv whose weight is the k x k weight reshaped. Slower and more memory-hungry (a (B, C*k*k,
  H', W') buffer), it lets DCNv2 train on CPU. (v1's op clamps taps that fall just past the
  last row or column to the border instead of reading zeros, so it has no such twin; it needs
  none.) :func:`choose_impl` picks 'sampler' for v2 on CPU, 'op' otherwise.
"""
import mxnet as mx

__all__ = ["DCN_IMPLS", "DCN_VERSIONS", "choose_impl", "deformable_conv", "offset_channels"]

DCN_VERSIONS = (1, 2)
DCN_IMPLS = ("op", "sampler")


def choose_impl(version, device):
    """'sampler' for DCNv2 on CPU (``device`` 'cpu': MXNet 1.9.1's modulated op has no CPU
    backward), 'op' otherwise (v1, GPU, or an unknown device: None)."""
    return "sampler" if version == 2 and device == "cpu" else "op"


def offset_channels(version, kernel=3, deformable_groups=1):
    """Output channels of the offset conv: 2 * dg * k * k (v1), 3 * dg * k * k (v2: + mask)."""
    taps = deformable_groups * kernel * kernel
    return 2 * taps if version == 1 else 3 * taps


def deformable_conv(data, name, channels, kernel=3, stride=1, pad=None, dilate=1, groups=1,
                    version=2, deformable_groups=1, weight=None, im2col_step=64, impl="op",
                    in_channels=None):
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
        impl: 'op' (MXNet's contrib ops) or 'sampler' (v2 only: the stock-op composite; see
            the module docstring).
        in_channels: C, needed by 'sampler' (the weight's shape cannot be inferred through its
            reshape).

    Returns:
        (B, channels, ceil-like H', W') Symbol, sized exactly as ``mx.sym.Convolution`` with
        the same arguments.
    """
    if version not in DCN_VERSIONS:
        raise ValueError(f"DCN version must be one of {DCN_VERSIONS}, got {version!r}")
    if deformable_groups < 1:
        raise ValueError(f"deformable_groups must be >= 1, got {deformable_groups}")
    if impl not in DCN_IMPLS:
        raise ValueError(f"DCN impl must be one of {DCN_IMPLS}, got {impl!r}")
    if impl == "sampler" and version != 2:
        raise ValueError(f"DCN layer {name}: impl 'sampler' is DCNv2's; v1 uses its op (CPU "
                         f"and GPU)")
    if impl == "sampler" and in_channels is None:
        raise ValueError(f"DCN layer {name}: impl 'sampler' needs in_channels")
    pad = dilate * (kernel - 1) // 2 if pad is None else pad
    geometry = dict(kernel=(kernel, kernel), stride=(stride, stride), pad=(pad, pad),
                    dilate=(dilate, dilate))
    offset_weight = mx.sym.var(f"{name}_offset_weight", init=mx.init.Zero())
    offset_bias = mx.sym.var(f"{name}_offset_bias", init=mx.init.Zero())
    offset = mx.sym.Convolution(data, weight=offset_weight, bias=offset_bias,
                                num_filter=offset_channels(version, kernel, deformable_groups),
                                name=f"{name}_offset", **geometry)
    if weight is None:
        shape = None if impl == "op" else (channels, in_channels // groups, kernel, kernel)
        weight = mx.sym.var(f"{name}_weight", shape=shape)
    taps = deformable_groups * kernel * kernel
    if impl == "sampler":
        mask = mx.sym.sigmoid(mx.sym.slice_axis(offset, axis=1, begin=2 * taps, end=3 * taps,
                                                name=f"{name}_mask_logit"), name=f"{name}_mask")
        return _sampled_conv(data, offset, mask, weight, name, channels, in_channels, kernel,
                             stride, pad, dilate, groups, deformable_groups)
    common = dict(weight=weight, num_filter=channels, num_group=groups,
                  num_deformable_group=deformable_groups, no_bias=True, name=name, **geometry)
    if version == 1:
        return mx.sym.contrib.DeformableConvolution(data=data, offset=offset, **common)
    shifts = mx.sym.slice_axis(offset, axis=1, begin=0, end=2 * taps, name=f"{name}_shift")
    mask = mx.sym.sigmoid(mx.sym.slice_axis(offset, axis=1, begin=2 * taps, end=3 * taps,
                                            name=f"{name}_mask_logit"), name=f"{name}_mask")
    return mx.sym.contrib.ModulatedDeformableConvolution(data=data, offset=shifts, mask=mask,
                                                         im2col_step=im2col_step, **common)


def _sampled_conv(data, offset, mask, weight, name, channels, in_channels, kernel, stride, pad,
                  dilate, groups, deformable_groups):
    """The 'sampler' implementation (module docstring): same layouts and values as the ops.

    Tap t = i * kernel + j (row i, column j) of deformable group g reads input row
    ``y = y_out * stride - pad + i * dilate + offset[:, 2 * (g * k * k + t)]`` and column
    ``x = x_out * stride - pad + j * dilate + offset[:, 2 * (g * k * k + t) + 1]``.
    """
    if in_channels % deformable_groups:
        raise ValueError(f"DCN layer {name}: {in_channels} input channels are not divisible by "
                         f"{deformable_groups} deformable groups")
    margin = max(pad, 1)  # zero border: the sampler's zero padding, and a size of at least 3
    padded = mx.sym.pad(data, mode="constant", constant_value=0,
                        pad_width=(0, 0, 0, 0, margin, margin, margin, margin),
                        name=f"{name}_pad")
    size = mx.sym.cast(mx.sym.slice_axis(mx.sym.shape_array(padded), axis=0, begin=2, end=4),
                       dtype="float32")  # (Hp, Wp)
    size = mx.sym.reverse(size, axis=0)  # (Wp, Hp): the grid's (x, y) order
    scale = mx.sym.reshape(2.0 / (size - 1.0), shape=(1, 2, 1, 1), name=f"{name}_grid_scale")
    rows = mx.sym.reshape(mx.sym.contrib.arange_like(offset, axis=2), shape=(1, 1, -1, 1))
    cols = mx.sym.reshape(mx.sym.contrib.arange_like(offset, axis=3), shape=(1, 1, 1, -1))
    group_channels = in_channels // deformable_groups
    per_group = []
    taps = kernel * kernel
    for g in range(deformable_groups):
        source = padded if deformable_groups == 1 else mx.sym.slice_axis(
            padded, axis=1, begin=g * group_channels, end=(g + 1) * group_channels)
        sampled = []
        for t in range(taps):
            i, j = divmod(t, kernel)
            at = 2 * (g * taps + t)
            dy = mx.sym.slice_axis(offset, axis=1, begin=at, end=at + 1)
            dx = mx.sym.slice_axis(offset, axis=1, begin=at + 1, end=at + 2)
            # padded-input pixel coordinates, then BilinearSampler's [-1, 1] (corner-aligned)
            y = mx.sym.broadcast_add(dy, rows * stride + (margin - pad + i * dilate))
            x = mx.sym.broadcast_add(dx, cols * stride + (margin - pad + j * dilate))
            grid = mx.sym.broadcast_mul(mx.sym.concat(x, y, dim=1), scale) - 1.0
            tap = mx.sym.BilinearSampler(source, grid, name=f"{name}_sample{g}_{t}")
            m = mx.sym.slice_axis(mask, axis=1, begin=g * taps + t, end=g * taps + t + 1)
            sampled.append(mx.sym.broadcast_mul(tap, m, name=f"{name}_modulate{g}_{t}"))
        per_group.append(mx.sym.stack(*sampled, axis=2))  # (B, C_g, k*k, H', W')
    stacked = per_group[0] if deformable_groups == 1 else mx.sym.concat(*per_group, dim=1)
    columns = mx.sym.reshape(stacked, shape=(0, -3, 0, 0), name=f"{name}_columns")
    # weight (O, C/groups, k, k) -> (O, C/groups * k * k, 1, 1): index c * k * k + t, the
    # columns' channel-major order, so grouped convs see their own channels
    flat_weight = mx.sym.reshape(weight, shape=(0, -1, 1, 1), name=f"{name}_weight_1x1")
    return mx.sym.Convolution(columns, weight=flat_weight, kernel=(1, 1),
                              num_filter=channels, num_group=groups, no_bias=True, name=name)
