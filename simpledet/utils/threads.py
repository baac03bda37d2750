"""MXNet's CPU thread count.

The mxnet 1.9.1 wheel runs each operator on one OpenMP thread unless OMP_NUM_THREADS says
otherwise, which halves ResNet-50 speed on a 2-core machine. We use every core the process may
run on, unless the user set OMP_NUM_THREADS (then MXNet already honours it).

The count must be in the environment before MXNet loads: setting it afterwards through
MXSetNumOMPThreads only reaches some operators (training a shapes quickstart ran at 14.4 img/s
that way against 18.3 img/s with the variable set first, on 2 cores). So ``import simpledet``
sets the variable when MXNet is not loaded yet, and falls back to the C call otherwise.
"""
import ctypes
import os
import sys


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
    cores = available_cores()
    if "mxnet" not in sys.modules:  # read once by the OpenMP runtime when MXNet loads
        os.environ["OMP_NUM_THREADS"] = str(cores)
        return cores
    import mxnet as mx

    mx.base.check_call(mx.base._LIB.MXSetNumOMPThreads(ctypes.c_int(cores)))
    return cores
