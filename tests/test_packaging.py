"""Install-level facts: one set of pins, the op library loads from the package, threads."""
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np

import simpledet
from simpledet.ops import library

ROOT = Path(__file__).resolve().parent.parent


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_mxnet_pin_for_build_matches_runtime_pins():
    meta = _pyproject()
    build_pin = [r for r in meta["build-system"]["requires"] if r.startswith("mxnet")]
    extras = meta["project"]["optional-dependencies"]
    assert build_pin == extras["cpu"] == ["mxnet==1.9.1"]
    assert extras["cu112"] == ["mxnet-cu112==1.9.1"]


def test_numpy_pinned_below_1_24_and_installed_version_matches():
    deps = _pyproject()["project"]["dependencies"]
    assert "numpy==1.23.5" in [d.split("#")[0].strip() for d in deps]
    assert np.__version__ == "1.23.5"


def test_library_loaded_once_from_an_absolute_path():
    path = library.load_library()
    assert path.is_absolute() and path.suffix == ".so"
    assert library.load_library() is path  # second call does not reload
    import mxnet as mx
    for op in library.REQUIRED_OPS:
        assert hasattr(mx.sym.contrib, op) and hasattr(mx.nd.contrib, op)


def _run_python(code, **env_changes):
    env = {k: v for k, v in os.environ.items() if k not in env_changes}
    env.update({k: v for k, v in env_changes.items() if v is not None})
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          timeout=120)


def test_missing_library_gives_clear_error():
    proc = _run_python("import simpledet", SIMPLEDET_OPS_LIB="/nonexistent/libsimpledet_ops.so")
    assert proc.returncode != 0
    assert "operator library /nonexistent/libsimpledet_ops.so not found" in proc.stderr
    assert "pip install -e" in proc.stderr


def test_threads_default_to_available_cores_unless_user_sets_omp_num_threads():
    code = ("import simpledet; from simpledet.utils import threads;"
            "print(threads.configure_threads(), threads.available_cores())")
    default = _run_python(code, OMP_NUM_THREADS=None)
    assert default.returncode == 0, default.stderr
    used, cores = default.stdout.split()
    assert used == cores
    user = _run_python(code, OMP_NUM_THREADS="1")
    assert user.returncode == 0, user.stderr
    assert user.stdout.split()[0] == "1"


def test_thread_count_reaches_the_environment_before_mxnet_loads():
    # MXSetNumOMPThreads after MXNet loaded leaves some operators on fewer threads; the
    # variable must be set first (and loader workers inherit it)
    code = ("import os, simpledet; from simpledet.utils import threads;"
            "print(os.environ['OMP_NUM_THREADS'], threads.available_cores())")
    proc = _run_python(code, OMP_NUM_THREADS=None)
    assert proc.returncode == 0, proc.stderr
    env_value, cores = proc.stdout.split()
    assert env_value == cores
    after_mxnet = _run_python(
        "import mxnet, os, simpledet; print(os.environ.get('OMP_NUM_THREADS'))",
        OMP_NUM_THREADS=None)
    assert after_mxnet.returncode == 0, after_mxnet.stderr
    assert after_mxnet.stdout.split() == ["None"]  # too late for the variable: the C call instead


def test_package_version():
    assert simpledet.__version__ == _pyproject()["project"]["version"]
