"""The 2MLP box head of FPN Faster R-CNN: flatten -> fc -> relu -> fc -> relu.

Parameters: ``bbox_fc1_{weight,bias}``, ``bbox_fc2_{weight,bias}`` (Xavier uniform over fan-in,
magnitude 3, SimpleDet's / detectron2's c2_xavier_fill), plus the predictors of base.py; a
Cascade R-CNN stage's head has its suffix after the layer name (``bbox_fc1_2nd_weight``).
"""
import mxnet as mx

from simpledet.models.bbox_head.base import BboxHead

__all__ = ["TwoMlpHead"]

_FC_INIT = mx.init.Xavier(rnd_type="uniform", factor_type="in", magnitude=3)


class TwoMlpHead(BboxHead):
    """Two shared fc layers of ``head_cfg.fc_dim`` units (arguments: see BboxHead)."""

    def _head_feature(self, roi_feat, tag):
        dim = self.head_cfg.fc_dim
        with mx.name.Prefix(self.prefix):
            flat = mx.sym.flatten(roi_feat, name=self._op("flatten", tag))
            fc1 = self._fc(flat, "fc1", dim, _FC_INIT, tag)
            fc1 = mx.sym.Activation(fc1, act_type="relu", name=self._op("fc1_relu", tag))
            fc2 = self._fc(fc1, "fc2", dim, _FC_INIT, tag)
            return mx.sym.Activation(fc2, act_type="relu", name=self._op("fc2_relu", tag))
