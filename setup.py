"""Builds operator_cxx/ into simpledet/_lib/libsimpledet_ops.so; metadata is in pyproject.toml."""
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "operator_cxx"))
import build as ops_build  # noqa: E402  (operator_cxx/build.py)


class BuildOpsLibrary(build_ext):
    """Compiles the op library with operator_cxx/build.py instead of distutils' compiler."""

    def get_ext_filename(self, fullname):
        # A plain .so name (no CPython ABI tag): it is loaded by MXNet, not imported by Python.
        return str(Path(*fullname.split("."))) + ".so"

    def build_extension(self, ext):
        out = Path(self.get_ext_fullpath(ext.name))
        cuda = ops_build.want_cuda()
        print(f"building {out} (cuda={cuda})")
        try:
            ops_build.build_library(out, cuda=cuda)
        except ops_build.BuildError as err:
            raise SystemExit(f"simpledet: building the operator library failed: {err}")


setup(
    ext_modules=[Extension("simpledet._lib.libsimpledet_ops", sources=[])],
    cmdclass={"build_ext": BuildOpsLibrary},
)
