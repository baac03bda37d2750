"""Checkpoints: round trip of params, optimizer state and trainer state; atomic writes."""
import json
import os

import mxnet as mx
import numpy as np
import pytest

from simpledet.engine import checkpoint as ckpt


def params():
    rng = np.random.default_rng(0)
    arg = {"conv_weight": mx.nd.array(rng.normal(size=(4, 3, 3, 3))),
           "fc_bias": mx.nd.array(rng.normal(size=(5,)))}
    aux = {"bn_moving_mean": mx.nd.array(rng.normal(size=(4,)))}
    return arg, aux


def sgd_updater_with_state():
    """An SGD updater that has taken two steps (non-zero momentum)."""
    opt = mx.optimizer.SGD(learning_rate=0.1, momentum=0.9)
    updater = mx.optimizer.get_updater(opt)
    weight = mx.nd.ones((3,))
    for _ in range(2):
        updater(0, mx.nd.array([1.0, 2.0, 3.0]), weight)
    return updater


def test_round_trip_params_optimizer_and_state(tmp_path):
    arg, aux = params()
    updater = sgd_updater_with_state()

    def write_states(path):
        with open(path, "wb") as f:
            f.write(updater.get_states())

    folder = ckpt.save_checkpoint(tmp_path, 10, arg, aux, {"loader": {"epoch": 1,
                                                                      "batch_index": 3}},
                                  write_states)
    assert os.path.basename(folder) == "iter_0000010"
    loaded = ckpt.load_checkpoint(folder)
    assert loaded.iteration == 10
    assert loaded.state["loader"] == {"epoch": 1, "batch_index": 3}
    for name, value in arg.items():
        np.testing.assert_array_equal(loaded.arg_params[name].asnumpy(), value.asnumpy())
    np.testing.assert_array_equal(loaded.aux_params["bn_moving_mean"].asnumpy(),
                                  aux["bn_moving_mean"].asnumpy())
    # the momentum comes back
    fresh = mx.optimizer.get_updater(mx.optimizer.SGD(learning_rate=0.1, momentum=0.9))
    with open(loaded.optimizer_file, "rb") as f:
        fresh.set_states(f.read())
    np.testing.assert_allclose(fresh.states[0].asnumpy(), updater.states[0].asnumpy())
    assert np.abs(fresh.states[0].asnumpy()).sum() > 0
    # MXNet-format keys, loadable by anyone
    keys = set(mx.nd.load(os.path.join(folder, ckpt.PARAMS_FILE)))
    assert keys == {"arg:conv_weight", "arg:fc_bias", "aux:bn_moving_mean"}


def test_a_failed_write_leaves_no_checkpoint_and_keeps_the_previous(tmp_path):
    arg, aux = params()
    ckpt.save_checkpoint(tmp_path, 10, arg, aux, {})

    def crash(path):
        with open(path, "wb") as f:
            f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        ckpt.save_checkpoint(tmp_path, 20, arg, aux, {}, crash)
    assert [it for it, _ in ckpt.list_checkpoints(tmp_path)] == [10]
    assert ckpt.find_checkpoint(tmp_path).endswith("iter_0000010")
    assert os.listdir(ckpt.checkpoint_root(tmp_path)) == ["iter_0000010"]


def test_an_interrupted_temp_folder_is_ignored_and_cleaned(tmp_path):
    arg, aux = params()
    ckpt.save_checkpoint(tmp_path, 10, arg, aux, {})
    root = ckpt.checkpoint_root(tmp_path)
    os.makedirs(os.path.join(root, ".iter_0000020.tmp-x"))  # a run killed mid-write
    os.makedirs(os.path.join(root, "iter_0000030"))  # no state.json: not complete
    assert [it for it, _ in ckpt.list_checkpoints(tmp_path)] == [10]
    ckpt.save_checkpoint(tmp_path, 40, arg, aux, {})
    assert not any(n.startswith(".") for n in os.listdir(root))


def test_resaving_an_iteration_replaces_it(tmp_path):
    arg, aux = params()
    ckpt.save_checkpoint(tmp_path, 10, arg, aux, {"n": 1})
    ckpt.save_checkpoint(tmp_path, 10, arg, aux, {"n": 2})
    folder = ckpt.find_checkpoint(tmp_path, 10)
    with open(os.path.join(folder, ckpt.STATE_FILE)) as f:
        assert json.load(f)["n"] == 2


def test_missing_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint in"):
        ckpt.find_checkpoint(tmp_path)
    arg, aux = params()
    ckpt.save_checkpoint(tmp_path, 10, arg, aux, {})
    with pytest.raises(ckpt.CheckpointError, match=r"iteration 7 .*available: \[10\]"):
        ckpt.find_checkpoint(tmp_path, 7)
