"""Loads the operator library (built by setup.py from operator_cxx/) into MXNet, once."""
import os
from pathlib import Path

import mxnet as mx

LIBRARY_NAME = "libsimpledet_ops.so"
DEFAULT_PATH = Path(__file__).resolve().parent.parent / "_lib" / LIBRARY_NAME
# The ops this package's wrappers call (registered as _contrib_<name>, so they appear as
# mx.sym.contrib.<name>); load_library() checks each one is there.
REQUIRED_OPS = ("PyramidProposal", "FPNROIAlign", "ProposalTarget", "DetectionPostprocess",
                "MaskTarget", "SigmoidFocalLoss", "RetinaPostprocess", "BoxDecode")

_loaded_path = None


class OpsLibraryError(RuntimeError):
    """The operator library is missing, stale or failed to load."""


def library_path() -> Path:
    """$SIMPLEDET_OPS_LIB if set (development builds), else the library inside the package."""
    override = os.environ.get("SIMPLEDET_OPS_LIB")
    return Path(override).resolve() if override else DEFAULT_PATH


def load_library() -> Path:
    """Loads the library with mx.library.load (absolute path) unless already loaded.

    Returns:
        The path that was loaded.
    """
    global _loaded_path
    if _loaded_path is not None:
        return _loaded_path
    path = library_path()
    if not path.exists():
        raise OpsLibraryError(
            f"operator library {path} not found. Build it with `pip install -e .` (or "
            f"`python operator_cxx/build.py`) from the repository root.")
    try:
        mx.library.load(str(path), verbose=False)
    except mx.base.MXNetError as err:
        raise OpsLibraryError(f"MXNet could not load {path}: {err}") from err
    missing = [op for op in REQUIRED_OPS if not hasattr(mx.sym.contrib, op)]
    # A $SIMPLEDET_OPS_LIB development build may hold a subset of the ops (build.py --ops).
    if missing and path == DEFAULT_PATH:
        raise OpsLibraryError(f"{path} lacks operators {missing}: it is stale; rebuild it with "
                              f"`pip install -e .` or `python operator_cxx/build.py`")
    _loaded_path = path
    return path
