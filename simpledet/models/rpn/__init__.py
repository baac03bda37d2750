"""Region proposal network heads (see base.py for the contract and layouts)."""
from simpledet.models.rpn.base import RpnHeadBase
from simpledet.models.rpn.rpn_head import RpnHead

__all__ = ["RpnHead", "RpnHeadBase"]
