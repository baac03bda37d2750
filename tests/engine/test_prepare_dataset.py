"""Synthetic datasets named by a config are generated on first use into a cache folder named
after their parameters, and the config's dataset paths point into it."""
import os
from pathlib import Path

from simpledet.config import load_config
from simpledet.engine.build import check_dataset_files, prepare_dataset

ROOT = Path(__file__).resolve().parents[2]
SHAPES_FPN = ROOT / "config/shapes/faster_fpn.py"
TINY = ["dataset.synthetic_train=3", "dataset.synthetic_val=2"]


def test_shapes_config_generates_once_into_its_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMPLEDET_CACHE_DIR", str(tmp_path))
    cfg = load_config(SHAPES_FPN, TINY)
    assert cfg.dataset.train_annotations.startswith(str(tmp_path))
    assert not os.path.exists(cfg.dataset.train_annotations)  # reading the config writes nothing
    messages = []
    root = prepare_dataset(cfg, log=messages.append)
    assert len(messages) == 1 and "first use" in messages[0]
    for split in ("train", "val"):
        check_dataset_files(cfg, split)  # raises if a path is missing
    assert os.path.dirname(os.path.dirname(cfg.dataset.train_annotations)) == root
    assert prepare_dataset(cfg, log=messages.append) == root
    assert len(messages) == 1  # the second call found it and generated nothing


def test_other_parameters_get_another_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SIMPLEDET_CACHE_DIR", str(tmp_path))
    a = load_config(SHAPES_FPN, TINY)
    b = load_config(SHAPES_FPN, TINY + ["dataset.synthetic_seed=1"])
    assert a.dataset.train_annotations != b.dataset.train_annotations


def test_file_datasets_are_not_generated():
    cfg = load_config(ROOT / "config/faster_r50v1_fpn_1x.py")
    assert prepare_dataset(cfg) is None
    assert cfg.dataset.train_annotations == "data/coco/annotations/instances_train2017.json"
