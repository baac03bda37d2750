"""The mask head contract, with the predictor, the loss and the prediction kept apart.

Layouts (R RoIs, K = num_classes including background 0, M = mask size):

- ``get_output(roi_feat)`` -> mask_logit (R, K, M, M): one mask logit map per class (the
  background channel is never trained nor read).
- ``get_loss(mask_logit, label, mask_target)`` -> {"mask_loss"}: (1,) Symbol; label (R,) the
  RoI's class (0 or -1 rows must have all-ignored targets), mask_target (R, M, M) in {1, 0} or
  -1 (ignored: background RoIs, gts without polygons), from simpledet.ops.mask_target.
- ``get_prediction(mask_logit, classes)`` -> mask_prob (R, M, M): the sigmoid of each RoI's
  channel ``classes`` (R,) (values < 1 read channel 0; their masks are unused).

Subclasses implement ``_head_feature(roi_feat) -> (R, C, M, M)``. Parameters are prefixed
``mask_``; the predictor is ``mask_logit_{weight,bias}`` (N(0, 0.001), bias 0).
"""
import mxnet as mx

from simpledet.models import losses

__all__ = ["MaskHead"]


class MaskHead:
    """Per-class binary masks on pooled RoI features.

    Args:
        head_cfg: its section (``cfg.mask_head``: num_convs, conv_channels, loss_weight).
        num_classes: K, classes including background.
        mask_size: M, the side of the predicted masks (twice the pooled RoI size).
        prefix: name prefix of the head's layers and parameters.
    """

    def __init__(self, head_cfg, num_classes, mask_size, prefix="mask_"):
        self.head_cfg = head_cfg
        self.num_classes = int(num_classes)
        self.mask_size = int(mask_size)
        self.prefix = prefix

    def _head_feature(self, roi_feat):
        """(R, C, m, m) RoI features -> (R, C', M, M) Symbol."""
        raise NotImplementedError

    def get_output(self, roi_feat):
        """Mask logits (R, K, M, M) of every RoI."""
        feat = self._head_feature(roi_feat)
        with mx.name.Prefix(self.prefix):
            weight = mx.sym.var(f"{self.prefix}logit_weight", init=mx.init.Normal(0.001))
            bias = mx.sym.var(f"{self.prefix}logit_bias", init=mx.init.Zero())
            return mx.sym.Convolution(feat, weight=weight, bias=bias, kernel=(1, 1),
                                      num_filter=self.num_classes, name="logit")

    def _class_channel(self, mask_logit, classes, name):
        """(R, M*M): each RoI's channel ``classes`` (clipped to >= 0) of its mask logits."""
        flat = mx.sym.reshape(mask_logit, shape=(0, 0, -1), name=f"{name}_flat")
        index = mx.sym.BlockGrad(mx.sym.relu(classes, name=f"{name}_index_relu"),
                                 name=f"{name}_index")
        # pick wants one index per remaining element: the class, repeated over the pixels.
        index = mx.sym.broadcast_axis(mx.sym.reshape(index, shape=(-1, 1),
                                                     name=f"{name}_index_col"),
                                      axis=1, size=self.mask_size ** 2,
                                      name=f"{name}_index_pixels")
        return mx.sym.pick(flat, index, axis=1, name=f"{name}_pick")

    def get_loss(self, mask_logit, label, mask_target):
        """Binary cross-entropy of the gt class's mask, averaged over the non-ignored pixels
        (the foreground RoIs' M*M pixels), times ``loss_weight``."""
        with mx.name.Prefix(self.prefix):
            logit = self._class_channel(mask_logit, label, "loss")
            target = mx.sym.reshape(mask_target, shape=(0, -1), name="target_flat")
            total = losses.sigmoid_bce_sum(logit, target, "bce")
            count = losses.sampled_count(target, "loss_count")
            loss = losses.normalize(total, count, "bce_normalized")
            if self.head_cfg.loss_weight != 1.0:
                loss = loss * float(self.head_cfg.loss_weight)
            return {"mask_loss": loss}

    def get_prediction(self, mask_logit, classes):
        """Mask probabilities (R, M, M) of each RoI's class."""
        with mx.name.Prefix(self.prefix):
            logit = self._class_channel(mask_logit, classes, "pred")
            prob = mx.sym.sigmoid(logit, name="prob")
            return mx.sym.reshape(prob, shape=(-1, self.mask_size, self.mask_size),
                                  name="prob_square")
