"""The fp16 leaves are their fp32 twins with precision 'fp16' and nothing else changed."""
from pathlib import Path

import pytest

from simpledet.config import diff_configs, load_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


@pytest.mark.parametrize("twin", ["faster_r50v1_fpn_1x", "faster_r50v1c4_c5_512roi_1x",
                                  "mask_r50v1_fpn_1x", "retina_r50v1_fpn_1x"])
def test_fp16_leaf_differs_from_its_fp32_twin_only_in_precision(twin):
    fp32 = load_config(CONFIG_DIR / f"{twin}.py")
    fp16 = load_config(CONFIG_DIR / f"{twin}_fp16.py")
    assert (fp32.precision, fp16.precision) == ("fp32", "fp16")
    assert fp16.runtime.device == "gpu"
    changed = {d.key for d in diff_configs(fp32, fp16, include_derived=False)}
    assert changed == {"name", "precision"}, diff_configs(fp32, fp16)
