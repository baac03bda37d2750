"""Python wrappers of simpledet's C++/CUDA operators (sources in operator_cxx/<op>/).

Each wrapper takes mx.sym.Symbol inputs (building a graph node) or mx.nd.NDArray inputs (running
the op now), validates its arguments, and documents tensor shapes and layouts.
"""
from simpledet.ops.library import OpsLibraryError, load_library

load_library()

from simpledet.ops.box_decode import box_decode  # noqa: E402
from simpledet.ops.detection_postprocess import detection_postprocess  # noqa: E402
from simpledet.ops.focal_loss import sigmoid_focal_loss  # noqa: E402
from simpledet.ops.fpn_roi_align import fpn_roi_align  # noqa: E402
from simpledet.ops.mask_target import mask_target  # noqa: E402
from simpledet.ops.proposal_target import proposal_target  # noqa: E402
from simpledet.ops.pyramid_proposal import pyramid_proposal  # noqa: E402
from simpledet.ops.retina_postprocess import retina_postprocess  # noqa: E402

__all__ = ["OpsLibraryError", "load_library", "pyramid_proposal", "fpn_roi_align",
           "proposal_target", "detection_postprocess", "mask_target", "sigmoid_focal_loss",
           "retina_postprocess", "box_decode"]
