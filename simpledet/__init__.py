"""SimpleDet: object detection on MXNet's symbolic API.

Importing the package sets MXNet's CPU thread count (unless OMP_NUM_THREADS is set) and loads
the operator library once, so ``mx.sym.contrib.FPNROIAlign`` & co. exist afterwards.
"""
from simpledet.utils.threads import configure_threads

configure_threads()  # before anything imports MXNet (see utils/threads.py)

from simpledet.ops.library import load_library  # noqa: E402  (imports MXNet)

__version__ = "0.1.0"

load_library()
