"""The one normalization layer every component uses: fixed BN, BN, SyncBN, GroupNorm or none.

The backbone (``backbone.normalizer``), the FPN neck (``neck.normalizer``), the box head
(``bbox_head.normalizer``), the mask head (``mask_head.normalizer``) and RetinaNet's head
(``head.norm``) all build their normalization through :class:`Normalizer` /
:func:`group_norm`, so a 'gn' means the same layer everywhere (32 groups, eps 1e-5,
per-channel affine).

Every kind but 'none' creates parameters named ``{name}_gamma`` / ``{name}_beta`` (and, for
the BatchNorm kinds, auxiliary states ``{name}_moving_mean`` / ``{name}_moving_var``), so
pretrained files and freeze patterns see the same names whichever normalizer a config picks.
"""
import mxnet as mx

__all__ = ["NORMALIZER_KINDS", "Normalizer", "group_norm", "make_normalizer"]

NORMALIZER_KINDS = ("fixbn", "bn", "syncbn", "gn", "none")
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
            (``contrib.SyncBatchNorm`` over ``num_devices`` devices, one key per layer), 'gn'
            (GroupNorm, ``num_groups`` groups, per-channel affine) or 'none' (identity: the
            layer before it keeps its bias, see :attr:`is_identity`).
        num_devices: devices SyncBatchNorm synchronizes over.
        num_groups: GroupNorm's channel groups.
        key: the config key the kind came from, for error messages.
    """

    def __init__(self, kind, num_devices=1, *, num_groups=_GN_GROUPS,
                 key="backbone.normalizer"):
        if kind not in NORMALIZER_KINDS:
            raise ValueError(f"{key} must be one of {NORMALIZER_KINDS}, got {kind!r}")
        if kind == "syncbn" and num_devices < 1:
            raise ValueError(f"{key} 'syncbn' needs num_devices >= 1, got {num_devices}")
        if num_groups < 1:
            raise ValueError(f"{key}: GroupNorm needs num_groups >= 1, got {num_groups}")
        self.kind = kind
        self.num_devices = int(num_devices)
        self.num_groups = int(num_groups)
        self.key = key

    @property
    def is_frozen(self):
        """True when the layers use stored statistics and their affine must not train."""
        return self.kind == "fixbn"

    @property
    def is_identity(self):
        """True for 'none': no layer, so a conv before it needs its own bias."""
        return self.kind == "none"

    def __call__(self, data, name, channels, gamma=None, beta=None, *, variables=None,
                 op_name=None):
        """Normalizes ``data``.

        Args:
            data: (B, channels, H, W) Symbol.
            name: layer name, e.g. 'stage1_unit1_bn1' (names the parameters).
            channels: channel count of ``data`` (GroupNorm's affine parameters need it).
            gamma, beta: (channels,) variables to use instead of ``{name}_gamma`` /
                ``{name}_beta`` (shorthand for ``variables``: a box head run twice).
            variables: None, or {"gamma", "beta", "moving_mean", "moving_var": Variable} to use
                instead of creating ``{name}_*`` (one layer applied to several inputs, e.g.
                TridentNet's branches, RetinaNet's levels; GroupNorm reads gamma and beta only).
            op_name: the op's name (default ``name``); SyncBatchNorm's key too.

        Returns:
            (B, channels, H, W) Symbol (``data`` itself for 'none').
        """
        if self.kind == "none":
            return data
        op_name = name if op_name is None else op_name
        shared = dict(variables or {})
        if gamma is not None:
            shared["gamma"] = gamma
        if beta is not None:
            shared["beta"] = beta
        if self.kind == "gn":
            return group_norm(data, op_name, channels, shared.get("gamma"), shared.get("beta"),
                              self.num_groups)
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
            ``{name}_beta`` (the initializer gives them 1 and 0 by name).
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


def make_normalizer(kind, num_devices=1, **kwargs):
    """The Normalizer of a config's normalizer field; see :class:`Normalizer`."""
    return Normalizer(kind, num_devices, **kwargs)
