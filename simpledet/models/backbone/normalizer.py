"""The normalization layer after each backbone conv: fixed BN, BN, SyncBN or GroupNorm.

Every kind creates parameters named ``{name}_gamma`` / ``{name}_beta`` (and, for the BatchNorm
kinds, auxiliary states ``{name}_moving_mean`` / ``{name}_moving_var``), so pretrained files and
freeze patterns see the same names whichever normalizer a config picks.
"""
import mxnet as mx

__all__ = ["NORMALIZER_KINDS", "Normalizer", "group_norm", "make_normalizer"]

NORMALIZER_KINDS = ("fixbn", "bn", "syncbn", "gn")
_BN_EPS = 1e-5
_BN_MOMENTUM = 0.9
_GN_GROUPS = 32
_GN_EPS = 1e-5


class Normalizer:
    """Builds one normalization layer per call.

    Attributes:
        kind: 'fixbn' (BatchNorm with use_global_stats=True: running statistics of the
            pretrained weights; its gamma/beta must be frozen, see
            ResNet.fixed_param_patterns), 'bn' (per-device batch statistics), 'syncbn'
            (``contrib.SyncBatchNorm`` over ``num_devices`` devices, one key per layer) or 'gn'
            (GroupNorm, 32 groups, per-channel affine).
        num_devices: devices SyncBatchNorm synchronizes over.
    """

    def __init__(self, kind, num_devices=1):
        if kind not in NORMALIZER_KINDS:
            raise ValueError(f"backbone.normalizer must be one of {NORMALIZER_KINDS}, "
                             f"got {kind!r}")
        if kind == "syncbn" and num_devices < 1:
            raise ValueError(f"syncbn needs num_devices >= 1, got {num_devices}")
        self.kind = kind
        self.num_devices = int(num_devices)

    @property
    def is_frozen(self):
        """True when the layers use stored statistics and their affine must not train."""
        return self.kind == "fixbn"

    def __call__(self, data, name, channels, *, variables=None, op_name=None):
        """Normalizes ``data``.

        Args:
            data: (B, channels, H, W) Symbol.
            name: layer name, e.g. 'stage1_unit1_bn1' (names the parameters).
            channels: channel count of ``data`` (GroupNorm's affine parameters need it).
            variables: None, or {"gamma", "beta", "moving_mean", "moving_var": Variable} to use
                instead of creating ``{name}_*`` (one layer applied to several inputs, e.g.
                TridentNet's branches; GroupNorm reads gamma and beta only).
            op_name: the op's name (default ``name``); SyncBatchNorm's key too.

        Returns:
            (B, channels, H, W) Symbol.
        """
        op_name = name if op_name is None else op_name
        shared = dict(variables or {})
        if self.kind == "gn":
            return group_norm(data, op_name, channels, gamma=shared.get("gamma"),
                              beta=shared.get("beta"))
        if self.kind == "fixbn":
            return mx.sym.BatchNorm(data, name=op_name, fix_gamma=False, use_global_stats=True,
                                    eps=_BN_EPS, **shared)
        if self.kind == "bn":
            return mx.sym.BatchNorm(data, name=op_name, fix_gamma=False, use_global_stats=False,
                                    momentum=_BN_MOMENTUM, eps=_BN_EPS, **shared)
        return mx.sym.contrib.SyncBatchNorm(data, name=op_name, key=op_name,
                                            ndev=self.num_devices, fix_gamma=False,
                                            momentum=_BN_MOMENTUM, eps=_BN_EPS, **shared)


def group_norm(data, name, channels, gamma=None, beta=None, num_groups=_GN_GROUPS):
    """GroupNorm with a per-channel affine.

    MXNet 1.9's GroupNorm op has per-*group* gamma/beta of shape (num_groups,); the paper (and
    detectron2, and GN-pretrained weights) use per-channel ones. So the op normalizes with a
    constant unit affine and the (channels,) gamma/beta are applied after it.

    Args:
        data: (B, channels, H, W) Symbol.
        name: layer name (its ops' names; the parameters' too unless given).
        channels: channel count of ``data``, divisible by ``num_groups``.
        gamma, beta: (channels,) variables to use (a layer shared by several inputs, as
            RetinaNet's head towers over the pyramid levels); None creates ``{name}_gamma`` /
            ``{name}_beta``.
        num_groups: channel groups.
    """
    if channels % num_groups:
        raise ValueError(f"GroupNorm layer {name}: {channels} channels are not divisible by "
                         f"{num_groups} groups")
    if gamma is None:
        gamma = mx.sym.var(f"{name}_gamma", shape=(channels,))
    if beta is None:
        beta = mx.sym.var(f"{name}_beta", shape=(channels,))
    unit_gamma = mx.sym.ones(shape=(num_groups,), name=f"{name}_unit_gamma")
    zero_beta = mx.sym.zeros(shape=(num_groups,), name=f"{name}_zero_beta")
    normed = mx.sym.GroupNorm(data, unit_gamma, zero_beta, num_groups=num_groups, eps=_GN_EPS,
                              name=name)
    scaled = mx.sym.broadcast_mul(normed, mx.sym.reshape(gamma, shape=(1, -1, 1, 1),
                                                         name=f"{name}_gamma_4d"),
                                  name=f"{name}_scale")
    return mx.sym.broadcast_add(scaled, mx.sym.reshape(beta, shape=(1, -1, 1, 1),
                                                       name=f"{name}_beta_4d"),
                                name=f"{name}_shift")


def make_normalizer(kind, num_devices=1):
    """The Normalizer of a config's ``backbone.normalizer``; see :class:`Normalizer`."""
    return Normalizer(kind, num_devices)
