"""The neck contract: backbone features -> the feature maps the dense head (the RPN, RetinaNet's
head) and the RoI extractor read.

A neck exposes ``rpn_feature_names`` / ``roi_feature_names`` (finest first) and ``strides``; its
``get_features`` maps the backbone's dict to a dict holding at least those names.
"""

from typing import ClassVar

__all__ = ["IdentityNeck", "Neck"]


class Neck:
    """Base class of necks.

    Attributes:
        rpn_feature_names: names of the dense head's input maps (the RPN's, or RetinaNet's
            head's), ascending stride.
        roi_feature_names: names of the maps RoIAlign pools from, ascending stride (none for
            a one-stage detector).
        strides: {name: stride} of every name above.
    """

    rpn_feature_names = ()
    roi_feature_names = ()
    strides: ClassVar[dict] = {}

    def get_features(self, features):
        """Builds the neck.

        Args:
            features: the backbone's {name: (B, C, H_l, W_l) Symbol}.

        Returns:
            {name: Symbol} containing every rpn/roi feature name.
        """
        raise NotImplementedError


class IdentityNeck(Neck):
    """No neck (C4 layout): RPN and RoIAlign read the backbone's c4 (stride 16) directly."""

    rpn_feature_names = ("c4",)
    roi_feature_names = ("c4",)
    strides: ClassVar[dict] = {"c4": 16}

    def get_features(self, features):
        if "c4" not in features:
            raise ValueError(f"the C4 layout needs backbone feature 'c4', got {sorted(features)}")
        return {"c4": features["c4"]}
