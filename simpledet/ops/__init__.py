"""Python wrappers of simpledet's C++/CUDA operators (see operator_cxx/)."""
from simpledet.ops.library import OpsLibraryError, load_library

__all__ = ["OpsLibraryError", "load_library"]
