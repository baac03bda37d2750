"""Dense (one-stage) detection heads: per-location class scores and box deltas on every
pyramid level (RetinaNet's; the RPN lives in simpledet.models.rpn)."""
from simpledet.models.dense_heads.retina_head import RetinaHead

__all__ = ["RetinaHead"]
