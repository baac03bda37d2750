"""The Trident backbone: its branches share exactly one set of parameters (the plain ResNet's
names, each used by every branch), the branch dilation changes a branch's output and nothing
else, branch 0 at dilation 1 is the plain ResNet, and TridentFast's single branch is the
stacked output's row for that branch."""
import json

import mxnet as mx
import numpy as np
import pytest

from simpledet.models.backbone import Normalizer, ResNet, TridentResNet

SHAPE = (2, 3, 64, 96)


def tiny(cls=TridentResNet, **kwargs):
    kw = dict(normalizer=Normalizer(kwargs.pop("norm", "fixbn")), frozen_stages=0, width=8)
    if cls is ResNet:
        kw["last_stage"] = 3
    kw.update(kwargs)
    return cls("v1b", 18, **kw)


def c4_of(backbone):
    return backbone.get_features(mx.sym.var("data"))["c4"]


def random_params(symbol, seed=0):
    rng = np.random.default_rng(seed)
    arg_shapes, _, aux_shapes = symbol.infer_shape(data=SHAPE)
    args = {n: mx.nd.array(rng.normal(0, 0.3, s)) for n, s in
            zip(symbol.list_arguments(), arg_shapes) if n != "data"}
    aux = {n: mx.nd.array(rng.uniform(0.5, 1.5, s) if n.endswith("var") else
                          rng.normal(0, 0.1, s))
           for n, s in zip(symbol.list_auxiliary_states(), aux_shapes)}
    return args, aux


def run(symbol, args, aux, data):
    names = symbol.list_arguments()
    exe = symbol.bind(mx.cpu(), {"data": mx.nd.array(data),
                                 **{n: args[n] for n in names if n != "data"}},
                      aux_states={n: aux[n] for n in symbol.list_auxiliary_states()})
    return exe.forward(is_train=False)[0].asnumpy()


def test_branches_share_one_set_of_parameters():
    trident, plain = c4_of(tiny()), c4_of(tiny(ResNet))
    names = trident.list_arguments()
    assert len(names) == len(set(names))
    assert names == plain.list_arguments()  # the plain ResNet's names, once each
    assert trident.list_auxiliary_states() == plain.list_auxiliary_states()
    # Each trident-unit parameter feeds three ops (one per branch), a leading one feeds one.
    nodes = json.loads(trident.tojson())["nodes"]
    users = {}
    for node in nodes:
        for src, _, _ in node.get("inputs", []):
            users.setdefault(nodes[src]["name"], []).append(node["name"])
    assert sorted(users["stage3_unit2_conv2_weight"]) == [
        f"stage3_unit2_conv2_branch{k}" for k in range(3)]
    assert sorted(users["stage3_unit2_bn1_moving_var"]) == [
        f"stage3_unit2_bn1_branch{k}" for k in range(3)]
    assert users["stage3_unit1_conv2_weight"] == ["stage3_unit1_conv2"]
    # Branch k's 3x3 convs (both of a basic unit) have dilation = pad = k + 1.
    attrs = {node["name"]: node.get("attrs", {}) for node in nodes}
    for k in range(3):
        for conv in ("conv1", "conv2"):
            assert attrs[f"stage3_unit2_{conv}_branch{k}"]["dilate"] == f"({k + 1}, {k + 1})"
            assert attrs[f"stage3_unit2_{conv}_branch{k}"]["pad"] == f"({k + 1}, {k + 1})"
    assert attrs["stage3_unit1_conv2"]["dilate"] == "(1, 1)"


def test_bottleneck_dilates_its_3x3_conv_only():
    c4 = c4_of(TridentResNet("v2", 50, frozen_stages=0))
    nodes = {node["name"]: node.get("attrs", {}) for node in json.loads(c4.tojson())["nodes"]}
    assert sum(name.startswith("stage3_unit") and name.endswith("_conv2_branch2")
               for name in nodes) == 5  # res4 of ResNet-50: units 2..6 are trident units
    assert nodes["stage3_unit6_conv2_branch2"]["dilate"] == "(3, 3)"
    assert nodes["stage3_unit6_conv1_branch2"]["dilate"] == "(1, 1)"
    assert nodes["stage3_unit6_conv3_branch2"]["pad"] == "(0, 0)"


@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_sharing_holds_for_trained_normalizers(norm):
    kw = {"norm": norm, "width": 32}  # GroupNorm's 32 groups
    trident, plain = c4_of(tiny(**kw)), c4_of(tiny(ResNet, **kw))
    assert trident.list_arguments() == plain.list_arguments()
    assert trident.list_auxiliary_states() == plain.list_auxiliary_states()


def test_dilation_changes_the_output_of_its_branch_only():
    base = c4_of(tiny())
    args, aux = random_params(base)
    data = np.random.default_rng(1).normal(0, 1, SHAPE).astype(np.float32)
    out = run(base, args, aux, data)
    assert out.shape == (2 * 3, 32, 4, 6)
    rows = out.reshape(2, 3, *out.shape[1:])
    assert not np.allclose(rows[:, 0], rows[:, 1], atol=1e-3)  # branches differ
    other = run(c4_of(tiny(dilations=(1, 2, 4))), args, aux, data).reshape(rows.shape)
    np.testing.assert_array_equal(other[:, :2], rows[:, :2])
    assert np.abs(other[:, 2] - rows[:, 2]).max() > 1e-3
    # Branch 0 (dilation 1) is the plain ResNet with the same parameters.
    plain = run(c4_of(tiny(ResNet)), args, aux, data)
    np.testing.assert_allclose(rows[:, 0], plain, rtol=1e-5, atol=1e-5)
    # TridentFast: the middle branch alone is row 1 of each image's block.
    fast = run(c4_of(tiny(branches=(1,))), args, aux, data)
    np.testing.assert_allclose(fast, rows[:, 1], rtol=1e-5, atol=1e-5)


def test_bad_settings_name_the_key():
    with pytest.raises(ValueError, match="trident_units"):
        tiny(trident_units=2)  # ResNet-18 res4 has 2 units: only the second can be trident
    with pytest.raises(ValueError, match="branches"):
        tiny(branches=(3,))
    with pytest.raises(ValueError, match="units"):
        tiny(ResNet).stage(mx.sym.var("x"), 3, 2, units=(2, 3))
