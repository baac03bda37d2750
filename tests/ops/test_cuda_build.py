"""The CUDA kernels compile whenever nvcc is present, so they cannot rot on CPU-only machines.
(Running them needs a GPU; see the README's GPU section for the consistency check.)"""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "operator_cxx"))
import build as ops_build  # noqa: E402


@pytest.mark.skipif(ops_build.find_nvcc() is None, reason="nvcc not installed")
def test_cuda_library_builds_and_exports_gpu_launchers(tmp_path):
    out = ops_build.build_library(tmp_path / "libsimpledet_ops.so", cuda=True, jobs=2)
    symbols = subprocess.run(["nm", "-DC", str(out)], capture_output=True, text=True).stdout
    assert "fpn_roi_align_forward_gpu" in symbols
    assert "cudaLaunchKernel" in symbols or "__cudaRegisterFatBinary" in symbols
    for op in ops_build.op_names():
        cu_files = list((ROOT / "operator_cxx" / op).glob("*.cu"))
        assert cu_files, f"operator_cxx/{op} has no CUDA implementation"


def test_every_op_folder_is_built_by_default():
    names = ops_build.op_names()
    assert "fpn_roi_align" in names and "common" not in names
