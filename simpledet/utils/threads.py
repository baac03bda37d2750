"""MXNet's CPU thread count.

The mxnet 1.9.1 wheel runs each operator on one OpenMP thread unless OMP_NUM_THREADS says
otherwise, which halves ResNet-50 speed on a 2-core machine. We use every core the process may
run on, unless the user set OMP_NUM_THREADS (then MXNet already honours it).
"""
import ctypes
import os


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_threads() -> int:
    """Sets MXNet's OpenMP thread count; returns the count in effect."""
    user_value = os.environ.get("OMP_NUM_THREADS")
    if user_value:
        return int(user_value)
    import mxnet as mx

    cores = available_cores()
    mx.base.check_call(mx.base._LIB.MXSetNumOMPThreads(ctypes.c_int(cores)))
    return cores
