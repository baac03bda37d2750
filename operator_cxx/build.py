"""Build the operator library ``libsimpledet_ops.so`` against the installed mxnet wheel.

Used by ``setup.py`` (at install time), by the CUDA compile test, and by hand:

    python operator_cxx/build.py --out /tmp/libsimpledet_ops.so [--ops fpn_roi_align] [--cuda]

Layout: ``operator_cxx/<op>/*.cc`` are CPU kernels plus the ``REGISTER_OP`` code,
``operator_cxx/<op>/*.cu`` are CUDA kernels, ``operator_cxx/common/`` holds shared headers and
the library's ``initialize``. The ``.cu`` files never include ``lib_api.h``: they expose plain
launcher functions (raw pointers + stream) that the ``.cc`` registration calls, so the CUDA build
does not need the curand headers that ``lib_api.h`` pulls in under NVCC (nvcc 13 here has none).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

OPS_ROOT = Path(__file__).resolve().parent
LIBRARY_NAME = "libsimpledet_ops.so"
CXXFLAGS = ["-std=c++17", "-O3", "-fPIC", "-fopenmp", "-Wall", "-Wno-unused-function"]


class BuildError(RuntimeError):
    """A compiler or toolchain problem, with the command that failed."""


def find_mxnet_dir() -> Path:
    """Locate the installed mxnet package without importing it (the build env has no numpy pin)."""
    spec = importlib.util.find_spec("mxnet")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("mxnet is not installed: the operator library is built against the "
                         "lib_api.h shipped in the mxnet==1.9.1 wheel. Install mxnet first.")
    root = Path(list(spec.submodule_search_locations)[0])
    for needed in ("include/mxnet/lib_api.h", "src/lib_api.cc"):
        if not (root / needed).exists():
            raise BuildError(f"{root / needed} is missing: mxnet 1.9.1 wheels ship it; "
                             f"is the installed mxnet a different version?")
    return root


def find_nvcc() -> str | None:
    nvcc = shutil.which("nvcc")
    if nvcc is None and Path("/usr/local/cuda/bin/nvcc").exists():
        nvcc = "/usr/local/cuda/bin/nvcc"
    return nvcc


def find_cuda_lib(nvcc: str) -> Path:
    """The folder holding libcudart.so: $CUDA_HOME, nvcc's install, or /usr/local/cuda."""
    homes = [os.environ.get("CUDA_HOME"), Path(nvcc).resolve().parent.parent, "/usr/local/cuda"]
    for home in filter(None, homes):
        for sub in ("lib64", "lib", "targets/x86_64-linux/lib"):
            if (Path(home) / sub / "libcudart.so").exists():
                return Path(home) / sub
    raise BuildError(f"libcudart.so not found under {homes}; set CUDA_HOME")


def op_names() -> list[str]:
    """Every op folder (a folder with a .cc file), excluding ``common``."""
    return sorted(p.name for p in OPS_ROOT.iterdir()
                  if p.is_dir() and p.name != "common" and any(p.glob("*.cc")))


def _sources(ops: list[str] | None, suffix: str) -> list[Path]:
    names = op_names() if ops is None else ops
    unknown = sorted(set(names) - set(op_names()))
    if unknown:
        raise BuildError(f"unknown op folder(s) {unknown}; known: {op_names()}")
    files = sorted((OPS_ROOT / "common").glob(f"*{suffix}"))
    for name in names:
        files += sorted((OPS_ROOT / name).glob(f"*{suffix}"))
    return files


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BuildError("command failed:\n  " + " ".join(cmd) + "\n" + proc.stdout + proc.stderr)


def _object_path(obj_dir: Path, src: Path, flags: list[str]) -> Path:
    key = hashlib.sha1((str(src) + " ".join(flags)).encode()).hexdigest()[:10]
    return obj_dir / f"{src.stem}-{key}.o"


def compile_cuda_objects(sources: list[Path], obj_dir: Path, nvcc: str,
                         jobs: int = 2) -> list[Path]:
    """Compile ``.cu`` files to objects with nvcc; returns the object paths."""
    arch = os.environ.get("SIMPLEDET_CUDA_ARCH")
    flags = ["-std=c++17", "-O3", "-Xcompiler", "-fPIC", "-I", str(OPS_ROOT / "common")]
    if arch:
        flags += [f"-arch={arch}"]
    cmds = []
    for src in sources:
        obj = _object_path(obj_dir, src, flags)
        cmds.append(([nvcc, *flags, "-c", str(src), "-o", str(obj)], obj))
    with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
        list(pool.map(lambda c: _run(c[0]), cmds))
    return [obj for _, obj in cmds]


def build_library(out: Path, ops: list[str] | None = None, cuda: bool = False,
                  jobs: int = 2, verbose: bool = False) -> Path:
    """Compile the selected ops (all by default) and lib_api.cc into one shared library.

    Args:
        out: path of the ``.so`` to write (written atomically: temp file + rename).
        ops: op folder names to include; None for all.
        cuda: also compile ``.cu`` kernels with nvcc and register GPU implementations.
        jobs: parallel compiler processes.
    """
    mx_dir = find_mxnet_dir()
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    defines = ["-DSIMPLEDET_WITH_CUDA"] if cuda else []
    include = ["-I", str(mx_dir / "include"), "-I", str(OPS_ROOT / "common")]
    with tempfile.TemporaryDirectory(prefix="simpledet-build-") as tmp:
        obj_dir = Path(tmp)
        cc_sources = _sources(ops, ".cc") + [mx_dir / "src" / "lib_api.cc"]
        flags = CXXFLAGS + defines + include
        cmds = []
        for src in cc_sources:
            obj = _object_path(obj_dir, src, flags)
            cmds.append((["g++", *flags, "-c", str(src), "-o", str(obj)], obj))
        if verbose:
            for cmd, _ in cmds:
                print(" ".join(cmd), file=sys.stderr)
        with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
            list(pool.map(lambda c: _run(c[0]), cmds))
        objects = [obj for _, obj in cmds]
        link_extra: list[str] = []
        if cuda:
            nvcc = find_nvcc()
            if nvcc is None:
                raise BuildError("SIMPLEDET_CUDA=1 but nvcc was not found on PATH or in "
                                 "/usr/local/cuda/bin")
            objects += compile_cuda_objects(_sources(ops, ".cu"), obj_dir, nvcc, jobs)
            link_extra = ["-L", str(find_cuda_lib(nvcc)), "-lcudart"]
        tmp_out = obj_dir / LIBRARY_NAME
        _run(["g++", "-shared", "-fopenmp", "-o", str(tmp_out), *map(str, objects),
              *link_extra])
        shutil.move(str(tmp_out), str(out.with_suffix(".so.tmp")))
        os.replace(out.with_suffix(".so.tmp"), out)
    return out


def want_cuda() -> bool:
    """CUDA kernels are built when SIMPLEDET_CUDA=1, or when a CUDA mxnet wheel is installed."""
    flag = os.environ.get("SIMPLEDET_CUDA")
    if flag is not None:
        return flag.strip() not in ("", "0", "false", "False")
    try:
        from importlib.metadata import distributions
        return any((d.metadata["Name"] or "").lower().startswith("mxnet-cu")
                   for d in distributions())
    except Exception:  # metadata unreadable: fall back to the CPU build
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=OPS_ROOT.parent / "simpledet" / "_lib" / LIBRARY_NAME)
    parser.add_argument("--ops", default=None, help="comma-separated op folders (default: all)")
    parser.add_argument("--cuda", action="store_true", default=None)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    ops = args.ops.split(",") if args.ops else None
    cuda = want_cuda() if args.cuda is None else args.cuda
    try:
        path = build_library(args.out, ops, cuda, args.jobs, args.verbose)
    except BuildError as err:
        print(f"build failed: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
