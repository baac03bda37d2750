"""ResNet v1 / v1b / v2 and ResNeXt backbones, named as SimpleDet's pretrained files.

Variants (``backbone.variant``):

- ``v1``: MSRA ResNet (the Caffe weights SimpleDet ships as ``resnet-v1-{depth}``): post-
  activation units, the stride of a downsampling bottleneck in its first 1x1 conv.
- ``v1b``: the same units with the stride in the 3x3 conv (GluonCV ``resnet{depth}_v1b``,
  torchvision, detectron2).
- ``resnext``: v1b units whose 3x3 conv is grouped (cardinality ``resnext_groups``, width
  ``resnext_groups * resnext_group_width`` in stage 1, doubling per stage: 32x4d, 64x4d, 32x8d).
- ``v2``: pre-activation units (MXNet model-zoo ``resnet-{depth}``): norm -> relu -> conv, the
  stride in the 3x3 conv, the shortcut taken after the first activation, and a fixed
  ``bn_data`` BatchNorm whitening the raw 0..255 pixels (so the loader's mean/std are 0/1).

Depths 18 and 34 use basic units (two 3x3 convs), 50/101/152 bottleneck units (ResNeXt: 50,
101, 152 only).

Parameter names (``{u}`` = ``stage{s}_unit{i}``, s = 1..4 for res2..res5, i from 1; every norm
layer has ``_gamma``/``_beta`` and, for BatchNorm kinds, ``_moving_mean``/``_moving_var``):

- stem: ``conv0_weight`` (7x7, stride 2), norm ``bn0``, then a 3x3 stride-2 max pool; v2 has
  ``bn_data`` before ``conv0``.
- v1 / v1b / resnext bottleneck: ``{u}_conv1``, ``{u}_bn1``, ``{u}_conv2``, ``{u}_bn2``,
  ``{u}_conv3``, ``{u}_bn3``; projection shortcut ``{u}_sc`` + ``{u}_sc_bn``.
- v1 / v1b basic: ``{u}_conv1``, ``{u}_bn1``, ``{u}_conv2``, ``{u}_bn2``, ``{u}_sc``,
  ``{u}_sc_bn``.
- v2 bottleneck: ``{u}_bn1``, ``{u}_conv1``, ``{u}_bn2``, ``{u}_conv2``, ``{u}_bn3``,
  ``{u}_conv3``, shortcut ``{u}_sc`` (no norm); basic: ``{u}_bn1``, ``{u}_conv1``,
  ``{u}_bn2``, ``{u}_conv2``, ``{u}_sc``. After res5 v2 has a final norm ``bn1`` (used by the
  C5 box head).
- convs have no bias. Unit 1 of a stage has the projection shortcut when its shape changes;
  v2 always has one in unit 1 (as the MXNet model-zoo files).
- dilated res5 (``res5_dilation`` 2: detectron2's "DC5", SimpleDet's ``c4c5`` backbones): res5
  runs once on the whole image with stride 1 and its 3x3 convs dilated, so c5 stays at stride
  16 with res5's receptive field; same parameters as the plain res5, so the classifier file
  loads. Its c5 is read by heads as the C5 box head reads res5: v2 adds the final norm ``bn1``
  and relu.
- DCN (``dcn_stages``): in those stages every unit's 3x3 ``{u}_conv2`` is deformable (same
  weight name and shape, so a plain pretrained file loads into it) with a zero-initialised
  offset conv ``{u}_conv2_offset_{weight,bias}`` (simpledet.models.layers.dcn), which no
  pretrained classifier file holds: it is not in :meth:`ResNet.param_patterns`.
"""
import mxnet as mx

from simpledet.models.backbone.base import Backbone
from simpledet.models.layers.dcn import DCN_IMPLS, DCN_VERSIONS, choose_impl, deformable_conv
from simpledet.models.layers.normalizer import Normalizer

__all__ = ["RESNET_DEPTHS", "RESNET_VARIANTS", "ResNet"]

RESNET_VARIANTS = ("v1", "v1b", "v2", "resnext")
RESNET_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
                 152: (3, 8, 36, 3)}
_BASIC_DEPTHS = (18, 34)
_FEATURE_OF_STAGE = {1: "c2", 2: "c3", 3: "c4", 4: "c5"}
_STRIDE_OF_STAGE = {1: 4, 2: 8, 3: 16, 4: 32}
# Names of every norm layer this module can create, for the frozen-normalizer pattern.
_NORM_LAYER_NAMES = r"(bn_data|bn0|bn1|stage[1-4]_unit[0-9]+_(bn[1-3]|sc_bn))"
# Every layer this module names: stem, units of stages 1..4, v2's input whitening and final norm.
_LAYER_NAMES = r"(bn_data|conv0|bn0|bn1|stage[1-4]_unit[0-9]+)"
# DCN offset convs: backbone layers, but no pretrained classifier file has them.
_OFFSET_NAMES = r"stage[1-4]_unit[0-9]+_conv2_offset_"
_FROZEN_BN = Normalizer("fixbn")


class _BuildScope:
    """How ``ResNet.stage`` builds its layers: the shared variables (None: by name), the 3x3
    dilation and the op-name suffix (see ``ResNet.stage``)."""

    def __init__(self, variables=None, dilate=1, op_suffix=""):
        if dilate < 1:
            raise ValueError(f"dilate must be >= 1, got {dilate}")
        self.variables, self.dilate, self.op_suffix = variables, dilate, op_suffix

    def variable(self, name):
        """The shared Variable ``name``, created on first use."""
        if name not in self.variables:
            self.variables[name] = mx.sym.var(name)
        return self.variables[name]

    def norm_variables(self, layer):
        """{suffix: Variable} of a norm layer's parameters when sharing, else None (the
        normalizer creates and names them)."""
        if self.variables is None:
            return None
        return {kind: self.variable(f"{layer}_{kind}")
                for kind in ("gamma", "beta", "moving_mean", "moving_var")}


class ResNet(Backbone):
    """A ResNet-family backbone returning c2..c5 (or c2..c4 for the C4 layout).

    Args:
        variant: 'v1', 'v1b', 'v2' or 'resnext' (see the module docstring).
        depth: 18, 34, 50, 101 or 152.
        normalizer: a :class:`Normalizer` (fixbn / bn / syncbn / gn).
        frozen_stages: 0 trains everything; k >= 1 freezes the stem and stages 1..k (res2..);
            4 and 5 both freeze every stage.
        last_stage: 4 returns c2..c5 (FPN); 3 stops at c4 (C4 layout: res5 is built by
            :meth:`res5` inside the box head instead).
        resnext_groups / resnext_group_width: ResNeXt cardinality and per-group width.
        width: stem channels and first-stage width of basic units (64 in every published
            ResNet); smaller widths make cheap from-scratch models (all channels scale with it).
        dcn_stages: residual stages by their res number (2..5 = res2..res5, SimpleDet's
            (3, 4, 5) or (4, 5)) whose units' 3x3 conv2 is deformable; () for none.
        dcn_version: 1 (DeformableConvolution) or 2 (modulated, ModulatedDeformableConvolution).
        dcn_groups: deformable groups (channel groups sharing one offset field).
        dcn_impl: 'op' (MXNet's contrib ops) or 'sampler' (DCNv2 from stock ops, which train
            on CPU); same parameters either way (simpledet.models.layers.dcn).
        res5_dilation: 1 builds res5 as the classifier (stride 2: c5 at stride 32); 2 runs it
            at stride 1 with its 3x3 convs dilated by 2 (c5 at stride 16, v2 with its final
            ``bn1`` + relu; see the module docstring). Needs last_stage 4.
    """

    _scope = _BuildScope()  # stage() swaps in its own while it builds

    def __init__(self, variant="v1", depth=50, normalizer=None, *, frozen_stages=1, last_stage=4,
                 resnext_groups=32, resnext_group_width=4, width=64, dcn_stages=(),
                 dcn_version=2, dcn_groups=1, dcn_impl="op", res5_dilation=1):
        if variant not in RESNET_VARIANTS:
            raise ValueError(f"backbone.variant must be one of {RESNET_VARIANTS}, got "
                             f"{variant!r}")
        if depth not in RESNET_DEPTHS:
            raise ValueError(f"backbone.depth must be one of {sorted(RESNET_DEPTHS)}, got "
                             f"{depth!r}")
        if variant == "resnext" and depth in _BASIC_DEPTHS:
            raise ValueError(f"backbone.depth {depth} uses basic units, which have no grouped "
                             f"conv: ResNeXt needs depth 50, 101 or 152")
        if last_stage not in (3, 4):
            raise ValueError(f"last_stage must be 3 (C4 layout) or 4 (c2..c5), got {last_stage}")
        if frozen_stages < 0:
            raise ValueError(f"backbone.frozen_stages must be >= 0, got {frozen_stages}")
        if width < 1:
            raise ValueError(f"backbone.width must be >= 1, got {width}")
        if not set(dcn_stages) <= {2, 3, 4, 5} or len(set(dcn_stages)) != len(dcn_stages):
            raise ValueError(f"backbone.dcn_stages must be distinct res numbers in 2..5, got "
                             f"{tuple(dcn_stages)}")
        if dcn_version not in DCN_VERSIONS:
            raise ValueError(f"backbone.dcn_version must be one of {DCN_VERSIONS}, got "
                             f"{dcn_version!r}")
        if dcn_impl not in DCN_IMPLS:
            raise ValueError(f"dcn_impl must be one of {DCN_IMPLS}, got {dcn_impl!r}")
        if res5_dilation not in (1, 2):
            raise ValueError(f"res5_dilation must be 1 or 2, got {res5_dilation!r}")
        if res5_dilation != 1 and last_stage != 4:
            raise ValueError(f"res5_dilation {res5_dilation} needs res5 in the backbone "
                             f"(last_stage 4), got last_stage {last_stage}")
        self.variant = variant
        self.depth = depth
        self.normalizer = normalizer or Normalizer("fixbn")
        self.frozen_stages = int(frozen_stages)
        self.last_stage = last_stage
        self.width = int(width)
        self.groups = resnext_groups if variant == "resnext" else 1
        self.group_width = resnext_group_width
        self.units = RESNET_DEPTHS[depth]
        self.dcn_stages = tuple(sorted(dcn_stages))
        self.dcn_version = dcn_version
        self.dcn_groups = int(dcn_groups)
        self.dcn_impl = dcn_impl
        self._on_rois = False  # True while res5() builds on a batch of RoIs
        self.basic = depth in _BASIC_DEPTHS
        self.res5_dilation = int(res5_dilation)
        self.strides = {_FEATURE_OF_STAGE[s]: _STRIDE_OF_STAGE[s]
                        for s in range(1, last_stage + 1)}
        if self.res5_dilation > 1:
            self.strides["c5"] = self.strides["c4"]  # res5 at stride 1

    @classmethod
    def from_config(cls, backbone_cfg, *, num_devices=1, last_stage=4, device=None,
                    res5_dilation=1):
        """The backbone of a ``BackboneConfig`` (``cfg.backbone``).

        Args:
            backbone_cfg: the config section.
            num_devices: devices SyncBatchNorm synchronizes over (``cfg.runtime.num_devices``).
            last_stage: 4 for c2..c5, 3 for the C4 layout.
            device: ``cfg.runtime.device``; DCNv2 on 'cpu' uses the stock-op implementation
                (simpledet.models.layers.dcn.choose_impl).
            res5_dilation: 1, or 2 for a dilated res5 at stride 16 (the layout decides it).
        """
        return cls(backbone_cfg.variant, backbone_cfg.depth,
                   Normalizer(backbone_cfg.normalizer, num_devices),
                   frozen_stages=backbone_cfg.frozen_stages, last_stage=last_stage,
                   resnext_groups=backbone_cfg.resnext_groups,
                   resnext_group_width=backbone_cfg.resnext_group_width,
                   width=backbone_cfg.width, dcn_stages=backbone_cfg.dcn_stages,
                   dcn_version=backbone_cfg.dcn_version, dcn_groups=backbone_cfg.dcn_groups,
                   dcn_impl=choose_impl(backbone_cfg.dcn_version, device),
                   res5_dilation=res5_dilation)

    # --- channel bookkeeping ----------------------------------------------------------------

    def out_channels(self, stage):
        """Output channels of stage 1..4 (res2..res5)."""
        return (self.width if self.basic else 4 * self.width) * 2 ** (stage - 1)

    def _mid_channels(self, stage):
        if self.basic:
            return self.out_channels(stage)
        if self.variant == "resnext":
            return self.groups * self.group_width * 2 ** (stage - 1)
        return self.out_channels(stage) // 4

    def _in_channels(self, stage):
        return self.width if stage == 1 else self.out_channels(stage - 1)

    # --- layers -----------------------------------------------------------------------------

    def _conv(self, data, name, channels, kernel, stride=1, groups=1):
        scope = self._scope
        dilate = scope.dilate if kernel > 1 else 1  # a dilated stage dilates its 3x3 convs
        pad = dilate * (kernel - 1) // 2
        shared = {} if scope.variables is None else {
            "weight": scope.variable(f"{name}_weight")}
        return mx.sym.Convolution(data, name=name + scope.op_suffix, num_filter=channels,
                                  kernel=(kernel, kernel), stride=(stride, stride),
                                  pad=(pad, pad), dilate=(dilate, dilate), num_group=groups,
                                  no_bias=True, **shared)

    def _conv2(self, data, name, channels, stride=1, groups=1):
        """A unit's 3x3 ``{name}_conv2``: deformable in the stages of ``dcn_stages``."""
        stage = int(name[len("stage")])  # names are stage{s}_unit{i}, s = 1..4 = res2..res5
        if stage + 1 not in self.dcn_stages:
            return self._conv(data, f"{name}_conv2", channels, 3, stride, groups)
        return deformable_conv(data, f"{name}_conv2", channels, 3, stride,
                               dilate=self._scope.dilate, groups=groups,
                               version=self.dcn_version, deformable_groups=self.dcn_groups,
                               im2col_step=1 if self._on_rois else 64,
                               impl=self.dcn_impl if self.dcn_version == 2 else "op",
                               in_channels=channels)  # every conv2 keeps its channel count

    def _norm(self, data, name, channels):
        scope = self._scope
        if self._is_frozen_layer(name) and self.normalizer.kind in ("bn", "syncbn"):
            # A frozen stage's BatchNorm uses its stored statistics, as detectron2's
            # FrozenBatchNorm: its affine does not train, so batch statistics would only drift
            # the layer away from the weights it was frozen with.
            return _FROZEN_BN(data, name, channels, variables=scope.norm_variables(name),
                              op_name=name + scope.op_suffix)
        return self.normalizer(data, name, channels, variables=scope.norm_variables(name),
                               op_name=name + scope.op_suffix)

    def _is_frozen_layer(self, name):
        """True for the stem and stages 1..frozen_stages (the layers fixed_param_patterns
        freezes)."""
        if self.frozen_stages < 1:
            return False
        frozen = ("conv0", "bn0") + tuple(f"stage{s}_" for s in range(1, self.frozen_stages + 1))
        return name.startswith(frozen)

    def _relu(self, data, name):
        return mx.sym.Activation(data, act_type="relu", name=name + self._scope.op_suffix)

    def stem(self, data):
        """conv0 (7x7, stride 2) -> norm -> relu -> 3x3 stride-2 max pool: (B, width, H/4, W/4)."""
        if self.variant == "v2":
            # MXNet model-zoo v2 weights whiten raw pixels themselves; always frozen.
            data = mx.sym.BatchNorm(data, name="bn_data", fix_gamma=True, use_global_stats=True,
                                    eps=2e-5)
        x = self._conv(data, "conv0", self.width, 7, stride=2)
        x = self._norm(x, "bn0", self.width)
        x = self._relu(x, "relu0")
        return mx.sym.Pooling(x, name="pool0", kernel=(3, 3), stride=(2, 2), pad=(1, 1),
                              pool_type="max")

    def stage(self, data, stage, stride, in_channels=None, *, units=None, dilate=1,
              variables=None, op_suffix=""):
        """Residual stage ``stage`` (1..4 = res2..res5) with ``stride`` in its first unit.

        Args:
            data: (B, in_channels, H, W) Symbol.
            stage: 1..4, names the parameters ``stage{stage}_unit{i}_*``.
            stride: 1 or 2.
            in_channels: channels of data; by default those of the previous stage (of this
                stage when ``units`` starts after unit 1).
            units: (first, last) unit numbers to build, 1-based and inclusive; None builds
                the whole stage. A range starting after unit 1 continues a stage (stride 1,
                no projection).
            dilate: dilation (and padding) of the stage's 3x3 convs; 1x1 convs are unchanged.
            variables: a dict {parameter name: Variable} shared by several builds of the same
                units (TridentNet's branches): a parameter found there is reused, a missing one
                is created and added, so each parameter exists once however often the units
                are built. None: each op creates its own parameters by name (the default).
            op_suffix: appended to the op names of this build (parameter names keep the
                unsuffixed layer names, e.g. op ``stage3_unit2_conv2_branch1`` with parameter
                ``stage3_unit2_conv2_weight``); each build sharing ``variables`` needs its own.

        Returns:
            (B, out_channels(stage), ceil(H / stride), ceil(W / stride)) Symbol.
        """
        first, last = (1, self.units[stage - 1]) if units is None else units
        if not 1 <= first <= last <= self.units[stage - 1]:
            raise ValueError(f"stage {stage} has units 1..{self.units[stage - 1]}, got "
                             f"units={units}")
        out_ch, mid_ch = self.out_channels(stage), self._mid_channels(stage)
        in_ch = in_channels if in_channels is not None else (
            self._in_channels(stage) if first == 1 else out_ch)
        outer, self._scope = self._scope, _BuildScope(variables, int(dilate), op_suffix)
        try:
            return self._stage_units(data, stage, stride, first, last, in_ch, out_ch, mid_ch)
        finally:
            self._scope = outer

    def _stage_units(self, data, stage, stride, first, last, in_ch, out_ch, mid_ch):
        for unit in range(first, last + 1):
            name = f"stage{stage}_unit{unit}"
            unit_stride = stride if unit == 1 else 1
            project = unit == 1 and (self.variant == "v2" or unit_stride != 1 or in_ch != out_ch)
            if self.variant == "v2":
                data = self._unit_v2(data, name, in_ch, mid_ch, out_ch, unit_stride, project)
            else:
                data = self._unit_v1(data, name, in_ch, mid_ch, out_ch, unit_stride, project)
            in_ch = out_ch
        return data

    def _unit_v1(self, data, name, in_ch, mid_ch, out_ch, stride, project):
        """Post-activation unit (v1, v1b, resnext)."""
        if self.basic:
            x = self._conv(data, f"{name}_conv1", out_ch, 3, stride)
            x = self._relu(self._norm(x, f"{name}_bn1", out_ch), f"{name}_relu1")
            x = self._norm(self._conv2(x, name, out_ch), f"{name}_bn2", out_ch)
        else:
            # v1 (MSRA) strides in the first 1x1 conv, v1b / ResNeXt in the 3x3 conv.
            s1, s3 = (stride, 1) if self.variant == "v1" else (1, stride)
            x = self._conv(data, f"{name}_conv1", mid_ch, 1, s1)
            x = self._relu(self._norm(x, f"{name}_bn1", mid_ch), f"{name}_relu1")
            x = self._conv2(x, name, mid_ch, s3, groups=self.groups)
            x = self._relu(self._norm(x, f"{name}_bn2", mid_ch), f"{name}_relu2")
            x = self._norm(self._conv(x, f"{name}_conv3", out_ch, 1), f"{name}_bn3", out_ch)
        shortcut = data
        if project:
            shortcut = self._conv(data, f"{name}_sc", out_ch, 1, stride)
            shortcut = self._norm(shortcut, f"{name}_sc_bn", out_ch)
        x = mx.sym.elemwise_add(x, shortcut, name=f"{name}_plus" + self._scope.op_suffix)
        return self._relu(x, f"{name}_relu")

    def _unit_v2(self, data, name, in_ch, mid_ch, out_ch, stride, project):
        """Pre-activation unit (v2): the output is the un-activated sum."""
        act = self._relu(self._norm(data, f"{name}_bn1", in_ch), f"{name}_relu1")
        if self.basic:
            x = self._conv(act, f"{name}_conv1", out_ch, 3, stride)
            x = self._relu(self._norm(x, f"{name}_bn2", out_ch), f"{name}_relu2")
            x = self._conv2(x, name, out_ch)
        else:
            x = self._conv(act, f"{name}_conv1", mid_ch, 1)
            x = self._relu(self._norm(x, f"{name}_bn2", mid_ch), f"{name}_relu2")
            x = self._conv2(x, name, mid_ch, stride)
            x = self._relu(self._norm(x, f"{name}_bn3", mid_ch), f"{name}_relu3")
            x = self._conv(x, f"{name}_conv3", out_ch, 1)
        shortcut = self._conv(act, f"{name}_sc", out_ch, 1, stride) if project else data
        return mx.sym.elemwise_add(x, shortcut, name=f"{name}_plus" + self._scope.op_suffix)

    # --- the contract -----------------------------------------------------------------------

    def get_features(self, data):
        """c2..c5 (or c2..c4 when last_stage is 3); see :class:`Backbone`.

        v2 stage outputs are the un-activated residual sums (as SimpleDet's v2 backbones),
        except a dilated res5's c5 (``res5_dilation`` 2), which ends with v2's final ``bn1``
        and relu as :meth:`res5` does.
        """
        x = self.stem(data)
        features = {}
        for stage in range(1, self.last_stage + 1):
            if stage == 4 and self.res5_dilation > 1:
                x = self._v2_final_norm(self.stage(x, stage, stride=1, dilate=self.res5_dilation))
            else:
                x = self.stage(x, stage, stride=1 if stage == 1 else 2)
            features[_FEATURE_OF_STAGE[stage]] = x
        return features

    def res5(self, data, stride=1):
        """res5 (stage 4) on RoI features, for the C5 box head of the C4 layout.

        Args:
            data: (R, out_channels(3), h, w) RoI features pooled from c4.
            stride: stride of the first unit; 1 as SimpleDet (7x7 RoIs stay 7x7).

        Returns:
            (R, out_channels(4), ceil(h / stride), ceil(w / stride)) Symbol, activated (v2 adds
            its final norm ``bn1`` and relu, as the pretrained classifier does).
        """
        self._on_rois = True  # any number of RoIs: DCNv2 needs im2col_step 1
        try:
            x = self.stage(data, 4, stride, in_channels=self.out_channels(3))
        finally:
            self._on_rois = False
        return self._v2_final_norm(x)

    def _v2_final_norm(self, x):
        """res5's output as the classifier hands it on: v2 (pre-activation) adds its final norm
        ``bn1`` and relu; the other variants' units already end activated."""
        if self.variant != "v2":
            return x
        return self._relu(self._norm(x, "bn1", self.out_channels(4)), "relu1")

    def param_patterns(self):
        """``^(bn_data|conv0|bn0|bn1|stage[1-4]_unit[0-9]+)_``: the stem, every unit of
        res2..res5 (res5 also when the C5 box head builds it) and v2's ``bn_data`` / ``bn1``;
        the layer names of the pretrained classifier files. Heads' names carry a component
        prefix (``fpn_``, ``rpn_``, ``bbox_``) and never match; nor do DCN offset convs
        (``stage{s}_unit{i}_conv2_offset_*``), which start from zero, not from the file."""
        if self.dcn_stages:
            return [f"^(?!{_OFFSET_NAMES}){_LAYER_NAMES}_"]
        return [f"^{_LAYER_NAMES}_"]

    def fixed_param_patterns(self):
        """Anchored patterns of the parameters not to train.

        - ``^bn_data_`` (v2): the fixed input whitening.
        - frozen_stages k >= 1: ``^conv0_``, ``^bn0_`` and ``^stage1_`` .. ``^stage{k}_``.
        - fixbn: the gamma/beta of every backbone norm layer (also res5 inside the C5 head),
          as a pattern over the backbone's own layer names, never a bare "gamma".
        """
        patterns = []
        if self.variant == "v2":
            patterns.append("^bn_data_")
        if self.frozen_stages >= 1:
            patterns += ["^conv0_", "^bn0_"]
            patterns += [f"^stage{s}_" for s in range(1, min(self.frozen_stages, 4) + 1)]
        if self.normalizer.is_frozen:
            patterns.append(f"^{_NORM_LAYER_NAMES}_(gamma|beta)$")
        return patterns
