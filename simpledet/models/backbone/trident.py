"""The TridentNet backbone (Li et al., 2019; SimpleDet's TridentResNet C4): a ResNet whose
last res4 units run as K parallel branches that differ only in the dilation of their 3x3 convs
and share one set of parameters.

res2, res3 and the leading units of res4 are the plain ResNet's; the trident units (the last
``trident_units`` of res4: all but the first by default, as SimpleDet) are built once per
branch with :meth:`ResNet.stage`'s ``variables`` (one dict shared by the branches, so every
parameter exists once) and ``op_suffix`` ``_branch{k}``. The K outputs are stacked along the
batch axis, image-major: c4 is (B*K, C, H/16, W/16) and row b*K + k is image b seen by branch k.
Parameter names are the ResNet's (``stage3_unit2_conv2_weight``, ...), so a pretrained
classifier file loads as it does for Faster R-CNN and a Trident checkpoint holds exactly the
parameters of the C4 Faster R-CNN it extends.
"""
import mxnet as mx

from simpledet.models.backbone.normalizer import Normalizer
from simpledet.models.backbone.resnet import _FEATURE_OF_STAGE, ResNet

__all__ = ["TridentResNet"]


class TridentResNet(ResNet):
    """c2, c3 (B images) and the stacked c4 (B*K rows) of a Trident ResNet (C4 layout).

    Args:
        variant, depth, normalizer, frozen_stages, resnext_groups, resnext_group_width, width:
            as :class:`ResNet` (last_stage is 3).
        dilations: the 3x3 dilation of each branch, e.g. (1, 2, 3).
        trident_units: how many of the last res4 units are trident units, 1..units-1; None:
            all but the first (which strides).
        branches: indices into ``dilations`` of the branches to build, in order; None builds
            all (training, full Trident test); (1,) builds the middle branch alone
            (TridentFast's test graph: c4 is then (B, C, h, w)).
    """

    def __init__(self, variant="v1", depth=50, normalizer=None, *, dilations=(1, 2, 3),
                 trident_units=None, branches=None, **kwargs):
        super().__init__(variant, depth, normalizer, last_stage=3, **kwargs)
        res4 = self.units[2]
        self.dilations = tuple(int(d) for d in dilations)
        if not self.dilations or min(self.dilations) < 1:
            raise ValueError(f"trident dilations must be >= 1, got {dilations}")
        self.trident_units = res4 - 1 if trident_units is None else int(trident_units)
        if not 1 <= self.trident_units <= res4 - 1:
            raise ValueError(f"trident_units must be in 1..{res4 - 1} (res4 of depth {depth} "
                             f"has {res4} units, the first strides), got {trident_units}")
        self.branches = tuple(range(len(self.dilations))) if branches is None else tuple(
            branches)
        if not self.branches or not all(0 <= k < len(self.dilations) for k in self.branches):
            raise ValueError(f"branches must index dilations {self.dilations}, got {branches}")

    @classmethod
    def from_config(cls, backbone_cfg, trident_cfg=None, *, num_devices=1, branches=None,
                    last_stage=3):
        """The backbone of a ``backbone`` section and a ``trident`` section
        (simpledet.config.tridentnet.TridentConfig)."""
        if last_stage != 3:
            raise ValueError(f"TridentNet is a C4 layout (last_stage 3), got {last_stage}")
        return cls(backbone_cfg.variant, backbone_cfg.depth,
                   Normalizer(backbone_cfg.normalizer, num_devices),
                   dilations=trident_cfg.dilations, trident_units=trident_cfg.trident_units,
                   branches=branches, frozen_stages=backbone_cfg.frozen_stages,
                   resnext_groups=backbone_cfg.resnext_groups,
                   resnext_group_width=backbone_cfg.resnext_group_width,
                   width=backbone_cfg.width)

    @property
    def num_branches(self):
        """Branches this backbone builds (the rows per image of c4)."""
        return len(self.branches)

    def get_features(self, data):
        """{"c2", "c3": (B, ...), "c4": (B * num_branches, C4, H/16, W/16)}, image-major."""
        x = self.stem(data)
        features = {}
        for stage in (1, 2):
            x = self.stage(x, stage, stride=1 if stage == 1 else 2)
            features[_FEATURE_OF_STAGE[stage]] = x
        res4 = self.units[2]
        first = res4 - self.trident_units + 1
        x = self.stage(x, 3, stride=2, units=(1, first - 1))
        shared = {}
        outputs = [self.stage(x, 3, stride=2, units=(first, res4), dilate=self.dilations[k],
                              variables=shared, op_suffix=f"_branch{k}")
                   for k in self.branches]
        if len(outputs) == 1:
            features["c4"] = outputs[0]
        else:
            stacked = mx.sym.stack(*outputs, axis=1, name="trident_stack")
            features["c4"] = mx.sym.reshape(stacked, shape=(-3, -2), name="trident_c4")
        return features
