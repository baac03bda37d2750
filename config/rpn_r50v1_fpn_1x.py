"""RPN-only (proposals alone), ResNet-50 v1 (MSRA weights) + FPN, 1x schedule; evaluated by
COCO proposal AR@100/300/1000."""
from _base.rpn_fpn import rpn_fpn

cfg = rpn_fpn()
cfg.backbone.variant = "v1"
cfg.backbone.depth = 50
