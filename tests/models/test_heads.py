"""FPN neck shapes and names, RPN head layouts and losses, box heads, the loss functions."""
import math

import mxnet as mx
import numpy as np
import pytest

from simpledet.config import FasterRcnnConfig
from simpledet.data.anchor_target import feature_levels
from simpledet.models import C5Head, FpnNeck, RpnHead, TwoMlpHead, losses
from simpledet.models.backbone import Normalizer, ResNet


def run(symbol, inputs, grad_of=()):
    """Forward (and backward with unit head gradient) of a symbol on NumPy inputs."""
    args = {k: mx.nd.array(v, dtype="float32") for k, v in inputs.items()}
    grads = {k: mx.nd.zeros(args[k].shape) for k in grad_of}
    req = {k: ("write" if k in grads else "null") for k in args}
    exe = symbol.bind(mx.cpu(), args, args_grad=grads, grad_req=req)
    outputs = exe.forward(is_train=bool(grads))
    if grads:
        exe.backward([mx.nd.ones(o.shape) for o in outputs])
    mx.nd.waitall()
    return [o.asnumpy() for o in outputs], {k: g.asnumpy() for k, g in grads.items()}


# --- FPN -----------------------------------------------------------------------------------

@pytest.mark.parametrize("height,width", [(800, 1344), (608, 1000)])
def test_fpn_shapes_follow_the_loader_levels(height, width):
    backbone = ResNet("v1", 50, Normalizer("fixbn"))
    neck = FpnNeck(channels=256)
    outputs = neck.get_features(backbone.get_features(mx.sym.var("data")))
    assert list(outputs) == ["p2", "p3", "p4", "p5", "p6"]
    _, shapes, _ = mx.sym.Group(list(outputs.values())).infer_shape(data=(2, 3, height, width))
    expected = feature_levels(height, width, (4, 8, 16, 32, 64))
    assert [(s[0], s[1], s[2], s[3]) for s in shapes] == [(2, 256, h, w) for _, h, w in expected]


def test_fpn_without_crop_matches_the_cropping_neck_on_multiples_of_32():
    features = {f"c{lvl}": mx.sym.var(f"c{lvl}") for lvl in (2, 3, 4, 5)}
    sizes = {"c2": (16, 24), "c3": (8, 12), "c4": (4, 6), "c5": (2, 3)}  # a 64x96 input
    rng = np.random.default_rng(0)
    inputs = {k: mx.nd.array(rng.normal(size=(1, 4, h, w))) for k, (h, w) in sizes.items()}
    results = []
    for crop in (True, False):
        group = mx.sym.Group(list(FpnNeck(channels=4, crop=crop).get_features(features).values()))
        args = {name: inputs[name] if name in inputs else mx.nd.array(
            np.random.default_rng(1).normal(size=shape))
            for name, shape in zip(group.list_arguments(), group.infer_shape(
                **{k: v.shape for k, v in inputs.items()})[0])}
        results.append([o.asnumpy() for o in group.bind(mx.cpu(), args).forward()])
    for cropped, uncropped in zip(*results):
        np.testing.assert_allclose(cropped, uncropped, rtol=1e-5, atol=1e-4)  # fusion rounding
    odd = FpnNeck(channels=4, crop=False).get_features({**features})
    with pytest.raises(mx.MXNetError):  # sizes that do not halve exactly need the crop
        mx.sym.Group(list(odd.values())).infer_shape(c2=(1, 4, 12, 12), c3=(1, 4, 6, 6),
                                                     c4=(1, 4, 3, 3), c5=(1, 4, 2, 2))


def test_fpn_parameter_names():
    features = {f"c{lvl}": mx.sym.var(f"c{lvl}") for lvl in (2, 3, 4, 5)}
    outputs = FpnNeck(channels=64).get_features(features)
    args = set(mx.sym.Group(list(outputs.values())).list_arguments())
    expected = {f"fpn_p{lvl}_{kind}_{p}" for lvl in (2, 3, 4, 5) for kind in ("lateral", "conv")
                for p in ("weight", "bias")}
    assert args - {"c2", "c3", "c4", "c5"} == expected


def test_fpn_top_down_adds_the_upsampled_coarser_level():
    features = {f"c{lvl}": mx.sym.var(f"c{lvl}") for lvl in (2, 3, 4, 5)}
    out = FpnNeck(channels=1).get_features(features)
    group = mx.sym.Group([out["p4"], out["p6"]])
    sizes = {"c2": 12, "c3": 6, "c4": 3, "c5": 2}  # odd c4: the upsampled c5 is cropped
    inputs = {k: np.zeros((1, 1, s, s), np.float32) for k, s in sizes.items()}
    inputs["c5"] = np.arange(4, dtype=np.float32).reshape(1, 1, 2, 2)
    for name in group.list_arguments():
        if name.endswith("_weight"):
            kernel = 3 if "conv" in name else 1
            w = np.zeros((1, 1, kernel, kernel), np.float32)
            w[0, 0, kernel // 2, kernel // 2] = 1  # identity convs
            inputs[name] = w
        elif name.endswith("_bias"):
            inputs[name] = np.zeros(1, np.float32)
    (p4, p6), _ = run(group, inputs)
    c5 = inputs["c5"][0, 0]
    np.testing.assert_array_equal(p4[0, 0], np.kron(c5, np.ones((2, 2)))[:3, :3])
    np.testing.assert_array_equal(p6[0, 0], c5[::2, ::2])


# --- RPN -----------------------------------------------------------------------------------

def small_cfg(**rpn):
    cfg = FasterRcnnConfig()
    cfg.dataset.class_names = ("a", "b")
    cfg.rpn.anchor_scales = (8.0,)
    cfg.rpn.anchor_ratios = (0.5, 1.0)
    for key, value in rpn.items():
        setattr(cfg.rpn, key, value)
    cfg.freeze()
    return cfg


def test_rpn_head_shares_weights_across_levels():
    cfg = small_cfg(conv_channels=16)
    head = RpnHead(cfg.rpn, ("p2", "p3"), (4, 8))
    logits, deltas = head.get_output([mx.sym.var("p2"), mx.sym.var("p3")])
    group = mx.sym.Group(logits + deltas)
    assert sorted(a for a in group.list_arguments() if a.startswith("rpn_")) == sorted(
        f"rpn_{layer}_{p}" for layer in ("conv_3x3", "cls_logit", "bbox_delta")
        for p in ("weight", "bias"))
    _, shapes, _ = group.infer_shape(p2=(2, 8, 10, 12), p3=(2, 8, 5, 6))
    assert shapes == [(2, 2, 10, 12), (2, 2, 5, 6), (2, 8, 10, 12), (2, 8, 5, 6)]


def rpn_loss_setup(levels):
    cfg = small_cfg()
    names = tuple(f"p{i}" for i in range(len(levels)))
    head = RpnHead(cfg.rpn, names, tuple(s for s, _, _ in levels))
    logits = [mx.sym.var(f"logit_{n}") for n in names]
    deltas = [mx.sym.var(f"delta_{n}") for n in names]
    label, target, weight = (mx.sym.var(n) for n in ("rpn_label", "rpn_target", "rpn_weight"))
    loss = head.get_loss(logits, deltas, label, target, weight)
    return cfg, names, mx.sym.Group([loss["rpn_cls_loss"], loss["rpn_reg_loss"]])


def test_rpn_loss_layout_matches_the_loader():
    """A label at flat index (level, a, y, x) must reach logit [b, a, y, x] of that level, and a
    target at (level, a*4+k, y, x) delta channel a*4+k: the loader's anchor_target layout."""
    levels = [(4, 3, 5), (8, 2, 3)]
    cfg, names, group = rpn_loss_setup(levels)
    num_a = cfg.rpn.num_anchors
    n = sum(num_a * h * w for _, h, w in levels)
    inputs = {"rpn_label": -np.ones((2, n), np.float32),
              "rpn_target": np.zeros((2, 4 * n), np.float32),
              "rpn_weight": np.zeros((2, 4 * n), np.float32)}
    for name, (_, h, w) in zip(names, levels):
        inputs[f"logit_{name}"] = np.zeros((2, num_a, h, w), np.float32)
        inputs[f"delta_{name}"] = np.zeros((2, 4 * num_a, h, w), np.float32)
    # image 1, level 1, anchor 1, y 1, x 2
    flat = num_a * 3 * 5 + (1 * 2 + 1) * 3 + 2
    inputs["rpn_label"][1, flat] = 1
    flat4 = 4 * num_a * 3 * 5 + ((1 * 4 + 3) * 2 + 1) * 3 + 2
    inputs["rpn_target"][1, flat4] = 0.5
    inputs["rpn_weight"][1, flat4] = 1
    grad_of = [f"logit_{n}" for n in names] + [f"delta_{n}" for n in names]
    (cls_loss, reg_loss), grads = run(group, inputs, grad_of)
    np.testing.assert_allclose(cls_loss, [math.log(2)], rtol=1e-6)  # one sampled anchor
    np.testing.assert_allclose(reg_loss, [0.5 - 0.5 / 9], rtol=1e-6)
    logit_grad = grads["logit_p1"]
    assert np.count_nonzero(logit_grad) == 1 and logit_grad[1, 1, 1, 2] == pytest.approx(-0.5)
    assert not grads["logit_p0"].any() and not grads["delta_p0"].any()
    delta_grad = grads["delta_p1"]
    assert np.count_nonzero(delta_grad) == 1 and delta_grad[1, 7, 1, 2] == pytest.approx(-1.0)


def test_rpn_loss_matches_numpy_and_ignores_minus_one():
    levels = [(16, 4, 4)]
    cfg, _, group = rpn_loss_setup(levels)
    rng = np.random.default_rng(1)
    n = cfg.rpn.num_anchors * 16
    logits = rng.normal(0, 2, (2, cfg.rpn.num_anchors, 4, 4)).astype(np.float32)
    deltas = rng.normal(0, 1, (2, 4 * cfg.rpn.num_anchors, 4, 4)).astype(np.float32)
    labels = rng.choice([-1, 0, 1], size=(2, n)).astype(np.float32)
    targets = rng.normal(0, 1, (2, 4 * n)).astype(np.float32)
    weights = np.repeat(labels == 1, 4, axis=1).reshape(2, n, 4)
    weights = weights.reshape(2, -1).astype(np.float32)  # not the loader layout; any mask works
    (cls_loss, reg_loss), _ = run(group, {"logit_p0": logits, "delta_p0": deltas,
                                          "rpn_label": labels, "rpn_target": targets,
                                          "rpn_weight": weights})
    x, z = logits.reshape(2, -1), labels
    bce = np.maximum(x, 0) - x * np.maximum(z, 0) + np.log1p(np.exp(-np.abs(x)))
    count = (z >= 0).sum()
    np.testing.assert_allclose(cls_loss, [(bce * (z >= 0)).sum() / count], rtol=1e-5)
    d = np.abs(deltas.reshape(2, -1) - targets)
    beta = 1 / 9
    sl1 = np.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)
    np.testing.assert_allclose(reg_loss, [(sl1 * weights).sum() / count], rtol=1e-5)


def test_rpn_loss_is_zero_when_everything_is_ignored():
    levels = [(16, 2, 2)]
    cfg, _, group = rpn_loss_setup(levels)
    n = cfg.rpn.num_anchors * 4
    (cls_loss, reg_loss), _ = run(group, {
        "logit_p0": np.ones((1, cfg.rpn.num_anchors, 2, 2), np.float32),
        "delta_p0": np.ones((1, 4 * cfg.rpn.num_anchors, 2, 2), np.float32),
        "rpn_label": -np.ones((1, n), np.float32), "rpn_target": np.zeros((1, 4 * n), np.float32),
        "rpn_weight": np.zeros((1, 4 * n), np.float32)})
    assert cls_loss[0] == 0 and reg_loss[0] == 0


def sampler_head(add_gt, crowd_iof=None):
    """An RpnHead sampling 4 RoIs per image, half of them at most foreground, classes 1..2;
    crowd regions only with crowd_iof."""
    cfg = FasterRcnnConfig()
    cfg.dataset.class_names = ("a", "b")
    cfg.roi_sampler.batch_per_image = 4
    cfg.roi_sampler.fg_fraction = 0.5
    cfg.roi_sampler.add_gt_as_proposals = add_gt
    cfg.roi_sampler.crowd_iof = crowd_iof
    cfg.freeze()
    return RpnHead(cfg.rpn, ("p2",), (4,), sampler_cfg=cfg.roi_sampler,
                   num_classes=cfg.num_classes, box_cfg=cfg.bbox_head)


# roi0 has IoU 100 / 120 with the gt in row 1 (row 0 is padding): fg; roi1 misses it: bg.
SAMPLER_INPUTS = {"rois": np.array([[0, 0, 0, 11, 9], [0, 10, 0, 29, 9]], np.float32),
                  "gt_boxes": np.array([[[-1] * 5, [0, 0, 9, 9, 2]]], np.float32)}


@pytest.mark.parametrize("add_gt", [True, False])
def test_rpn_sampled_proposal_gt_index_and_add_gt(add_gt):
    head = sampler_head(add_gt)
    rois, gt_boxes = mx.sym.var("rois"), mx.sym.var("gt_boxes")
    outs = head.get_sampled_proposal(rois, gt_boxes, with_gt_index=True)
    assert len(outs) == 5
    group = mx.sym.Group(list(outs))
    assert group.list_outputs()[-1] == "rpn_sampled_gt_index_output"
    (s_rois, labels, _, weights, gt_index), _ = run(group, SAMPLER_INPUTS)
    # quota 2 fg: roi0 (and the gt when it is a candidate); the rest repeats the one bg roi1.
    if add_gt:
        np.testing.assert_array_equal(s_rois[:, 1:], [[0, 0, 11, 9], [0, 0, 9, 9],
                                                      [10, 0, 29, 9], [10, 0, 29, 9]])
        np.testing.assert_array_equal(labels, [2, 2, 0, 0])
        np.testing.assert_array_equal(gt_index, [1, 1, -1, -1])
    else:
        np.testing.assert_array_equal(s_rois[:, 1:], [[0, 0, 11, 9]] + [[10, 0, 29, 9]] * 3)
        np.testing.assert_array_equal(labels, [2, 0, 0, 0])
        np.testing.assert_array_equal(gt_index, [1, -1, -1, -1])
    assert (weights[labels <= 0] == 0).all()
    # Without gt_index the head gives the same four outputs.
    four = head.get_sampled_proposal(rois, gt_boxes)
    assert len(four) == 4
    got, _ = run(mx.sym.Group(list(four)), SAMPLER_INPUTS)
    for g, w in zip(got, (s_rois, labels)):
        np.testing.assert_array_equal(g, w)
    with pytest.raises(TypeError, match="with_gt_index"):
        head.get_sampled_proposal(rois, gt_boxes, with_gt_index=1)


def test_rpn_sampled_proposal_ignores_background_on_crowd_regions():
    # roi1 [10, 0, 29, 9] lies inside the crowd region [5, 0, 40, 20] (IoF 1): with crowd_iof
    # it is no background row; roi0 (fg) overlaps the region too and stays fg. No bg is left,
    # so the rows after the 2 fg are ignored (-1) with zero weights.
    rois, gt_boxes, crowd = mx.sym.var("rois"), mx.sym.var("gt_boxes"), mx.sym.var("gt_crowd")
    inputs = dict(SAMPLER_INPUTS, gt_crowd=np.array([[[-1] * 4, [5, 0, 40, 20]]], np.float32))
    outs = sampler_head(True, crowd_iof=0.7).get_sampled_proposal(rois, gt_boxes,
                                                                   crowd_boxes=crowd)
    group = mx.sym.Group(list(outs))
    assert group.list_arguments() == ["rois", "gt_boxes", "gt_crowd"]
    (s_rois, labels, _, weights), _ = run(group, inputs)
    np.testing.assert_array_equal(labels, [2, 2, -1, -1])
    np.testing.assert_array_equal(s_rois[:2, 1:], [[0, 0, 11, 9], [0, 0, 9, 9]])
    assert weights[2:].sum() == 0
    # crowd_iof 1.0: nothing covers more than all of roi1, which is bg again (as without crowd).
    outs = sampler_head(True, crowd_iof=1.0).get_sampled_proposal(rois, gt_boxes,
                                                                   crowd_boxes=crowd)
    (_, labels, _, _), _ = run(mx.sym.Group(list(outs)), inputs)
    np.testing.assert_array_equal(labels, [2, 2, 0, 0])
    with pytest.raises(ValueError, match="pass crowd_boxes"):
        sampler_head(True, crowd_iof=0.7).get_sampled_proposal(rois, gt_boxes)
    with pytest.raises(ValueError, match="would not read them"):
        sampler_head(True, crowd_iof=0.0).get_sampled_proposal(rois, gt_boxes,
                                                               crowd_boxes=crowd)


# --- box heads and losses ------------------------------------------------------------------

def box_cfg(agnostic):
    cfg = FasterRcnnConfig()
    cfg.dataset.class_names = ("a", "b", "c")
    cfg.bbox_head.class_agnostic = agnostic
    cfg.bbox_head.fc_dim = 32
    cfg.freeze()
    return cfg


def box_args(agnostic):
    """(bbox_head section, num_classes, test section): a box head's arguments."""
    cfg = box_cfg(agnostic)
    return cfg.bbox_head, cfg.num_classes, cfg.test


@pytest.mark.parametrize("agnostic,reg", [(False, 16), (True, 4)])
def test_two_mlp_head_outputs(agnostic, reg):
    head = TwoMlpHead(*box_args(agnostic))
    cls_logit, bbox_delta = head.get_output(mx.sym.var("roi_feat"))
    group = mx.sym.Group([cls_logit, bbox_delta])
    _, shapes, _ = group.infer_shape(roi_feat=(10, 256, 7, 7))
    assert shapes == [(10, 4), (10, reg)]
    assert set(group.list_arguments()) == {"roi_feat"} | {
        f"bbox_{layer}_{p}" for layer in ("fc1", "fc2", "cls_logit", "reg_delta")
        for p in ("weight", "bias")}
    args, _, _ = group.infer_shape(roi_feat=(10, 256, 7, 7))
    assert dict(zip(group.list_arguments(), args))["bbox_fc1_weight"] == (32, 256 * 49)


def test_c5_head_runs_res5_with_backbone_names():
    backbone = ResNet("v1", 50, Normalizer("fixbn"), last_stage=3)
    cls_logit, bbox_delta = C5Head(*box_args(True), backbone).get_output(mx.sym.var("roi_feat"))
    group = mx.sym.Group([cls_logit, bbox_delta])
    _, shapes, _ = group.infer_shape(roi_feat=(6, 1024, 7, 7))
    assert shapes == [(6, 4), (6, 4)]
    args = group.list_arguments()
    assert "stage4_unit1_conv1_weight" in args and "bbox_cls_logit_weight" in args
    assert not any(a.startswith("bbox_stage") for a in args)
    arg_shapes, _, _ = group.infer_shape(roi_feat=(6, 1024, 7, 7))
    assert dict(zip(args, arg_shapes))["bbox_cls_logit_weight"] == (4, 2048)


def test_box_loss_matches_numpy():
    head = TwoMlpHead(*box_args(False))
    names = ("cls_logit", "bbox_delta", "label", "bbox_target", "bbox_weight")
    loss = head.get_loss(*(mx.sym.var(n) for n in names))
    group = mx.sym.Group([loss["bbox_cls_loss"], loss["bbox_reg_loss"]])
    rng = np.random.default_rng(2)
    logits = rng.normal(0, 1, (6, 4)).astype(np.float32)
    labels = np.array([1, 0, 3, -1, 0, 2], np.float32)
    deltas = rng.normal(0, 1, (6, 16)).astype(np.float32)
    targets = rng.normal(0, 1, (6, 16)).astype(np.float32)
    weights = np.zeros((6, 16), np.float32)
    for row, cls in enumerate(labels.astype(int)):
        if cls > 0:
            weights[row, 4 * cls:4 * cls + 4] = 1
    (cls_loss, reg_loss), grads = run(group, dict(zip(names, (logits, deltas, labels, targets,
                                                              weights))), ["cls_logit"])
    log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    valid = labels >= 0
    ce = -log_p[np.arange(6)[valid], labels[valid].astype(int)].sum() / valid.sum()
    np.testing.assert_allclose(cls_loss, [ce], rtol=1e-5)
    d = np.abs(deltas - targets)
    sl1 = np.where(d < 1, 0.5 * d * d, d - 0.5)
    np.testing.assert_allclose(reg_loss, [(sl1 * weights).sum() / valid.sum()], rtol=1e-5)
    assert not grads["cls_logit"][3].any()  # the ignored row gets no gradient


def test_smooth_l1_beta_zero_is_l1():
    pred, target, weight = mx.sym.var("p"), mx.sym.var("t"), mx.sym.var("w")
    total = losses.smooth_l1_sum(pred, target, weight, 0.0, "l1")
    (out,), _ = run(total, {"p": np.array([0.01, -2.0], np.float32),
                            "t": np.zeros(2, np.float32), "w": np.ones(2, np.float32)})
    np.testing.assert_allclose(out, [2.01], rtol=1e-6)


def test_bce_is_finite_and_exact_for_extreme_logits():
    logits, labels = mx.sym.var("x"), mx.sym.var("z")
    total = losses.sigmoid_bce_sum(logits, labels, "bce")
    x = np.array([[100.0, -100.0, 40.0, -40.0, 0.0, 7.0]], np.float32)
    z = np.array([[1, 0, 0, 1, 1, -1]], np.float32)
    (out,), grads = run(total, {"x": x, "z": z}, ["x"])
    np.testing.assert_allclose(out, [0 + 0 + 40 + 40 + math.log(2)], rtol=1e-5)
    sigmoid = 1 / (1 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(grads["x"], (sigmoid - z) * (z >= 0), atol=1e-6)
