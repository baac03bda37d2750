"""RetinaNet: the RetinaNet configs build train and test symbols whose shapes fit the loader's
batches; the P3-P7 neck's maps; one set of head weights shared by every level, with the prior
bias; a training step on a real-like batch (the photos fixture through the real loader:
non-unit scales, portrait and landscape buckets, category ids with gaps, a crowd region, 21
boxes in one image) with finite losses that fall when that batch is fitted; the test symbol's
detections in the base's layout, decoded into original pixels."""
import json
import math
import warnings
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from simpledet.config import RetinaNetConfig, load_config
from simpledet.data import photos
from simpledet.data.anchor_target import feature_levels
from simpledet.data.layout import batch_layout, graph_inputs
from simpledet.data.transforms import bucket_shape
from simpledet.detectors import RetinaNet
from simpledet.engine.build import build_dataset, build_train_loader, prepare_dataset
from simpledet.models import select_params
from simpledet.models.neck import RetinaFpnNeck

REPO = Path(__file__).resolve().parents[2]
RETINA_CONFIGS = sorted(p for p in (REPO / "config").rglob("retina*.py")
                        if "_base" not in p.parts)
LOSS_OUTPUTS = ["retina_cls_loss_output", "retina_reg_loss_output"]
STRIDES = (8, 16, 32, 64, 128)
TOWER_LAYERS = [f"{tower}_conv{i}" for tower in ("cls", "bbox") for i in range(1, 5)]


def load_quietly(path, overrides=()):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fixbn without pretrained weights
        cfg = load_config(path, overrides)
    return cfg, RetinaNet(cfg)


def test_the_family_has_its_configs():
    names = {str(p.relative_to(REPO / "config")) for p in RETINA_CONFIGS}
    assert {"retina_r50v1_fpn_1x.py", "retina_r50v1_fpn_1x_fp16.py", "retina_r101v1_fpn_1x.py",
            "shapes/retina_fpn.py"} <= names


@pytest.mark.parametrize("path", RETINA_CONFIGS,
                         ids=lambda p: str(p.relative_to(REPO / "config")))
def test_every_retina_config_builds_and_infers_shapes(path):
    cfg, model = load_quietly(path)
    assert isinstance(cfg, RetinaNetConfig) and type(cfg).detector_class is RetinaNet
    landscape = bucket_shape(cfg.input.short, cfg.input.long, cfg.input.short, cfg.input.long)
    portrait = bucket_shape(cfg.input.long, cfg.input.short, cfg.input.short, cfg.input.long)
    batch = cfg.train.images_per_device
    for bucket in (landscape, portrait):
        levels = feature_levels(*bucket, STRIDES)
        assert model.anchor_levels(*bucket) == levels
        anchors = 9 * sum(h * w for _, h, w in levels)
        assert model.train_data_shapes(batch, *bucket) == {
            "data": (batch, 3) + bucket, "retina_label": (batch, anchors),
            "retina_target": (batch, 4 * anchors), "retina_weight": (batch, 4 * anchors)}
    train = model.get_train_symbol()
    assert train.list_outputs() == LOSS_OUTPUTS
    _, out_shapes, _ = train.infer_shape(**model.train_data_shapes(batch, *portrait))
    assert out_shapes == [(1,), (1,)]
    test = model.get_test_symbol()
    assert test.list_outputs() == ["dets_output"]
    images = cfg.test.images_per_device
    _, out_shapes, _ = test.infer_shape(data=(images, 3) + portrait, im_info=(images, 3))
    assert out_shapes == [(images, cfg.test.max_det, 6)]
    train_inputs = set(train.list_arguments()) | set(train.list_auxiliary_states())
    assert set(test.list_arguments()) - set(model.test_data_names) <= train_inputs
    assert set(test.list_auxiliary_states()) <= train_inputs


def test_config_values_and_contract():
    cfg, model = load_quietly(REPO / "config" / "retina_r50v1_fpn_1x.py")
    assert cfg.anchors.scales == pytest.approx((4.0, 4 * 2 ** (1 / 3), 4 * 2 ** (2 / 3)))
    assert cfg.anchors.ratios == (0.5, 1.0, 2.0) and cfg.anchors.num_anchors == 9
    assert (cfg.targets.pos_iou, cfg.targets.neg_iou) == (0.5, 0.4)
    assert (cfg.head.focal_alpha, cfg.head.focal_gamma, cfg.head.reg_beta) == (0.25, 2.0, 0.11)
    assert (cfg.test.score_thresh, cfg.head.test_pre_nms, cfg.test.nms_iou,
            cfg.test.max_det) == (0.05, 1000, 0.5, 100)
    assert cfg.lr == pytest.approx(0.01 * cfg.total_batch / 16)
    assert cfg.mixed_precision.components == RetinaNet.precision_components == (
        "backbone", "neck", "head")
    assert model.feature_strides == STRIDES
    assert model.eval_types == ("bbox",)
    bucket = (800, 1344)
    assigners = model.target_assigners([bucket])
    assert model.train_data_names == ("data",) + assigners[0].names
    assert set(model.train_data_names) <= set(graph_inputs(assigners))
    layout = batch_layout(2, *bucket, cfg.input.max_num_gt, assigners)
    assert layout["retina_label"] == ((2, 201600), np.float32)
    # the loader's assigner is the config's
    assert assigners[0].scales == cfg.anchors.scales and assigners[0].pos_thresh == 0.5
    assert model.backbone_param_patterns() and not any(
        p.startswith(("^fpn", "^retina")) for p in model.backbone_param_patterns())


# --- neck and head ----------------------------------------------------------------------------

@pytest.mark.parametrize("p6_input", ["c5", "p5"])
def test_neck_gives_p3_to_p7_with_rounded_up_sizes(p6_input):
    c3, c4, c5 = (mx.sym.var(n) for n in ("c3", "c4", "c5"))
    neck = RetinaFpnNeck(channels=16, p6_input=p6_input)
    features = neck.get_features({"c3": c3, "c4": c4, "c5": c5})
    assert list(features) == ["p3", "p4", "p5", "p6", "p7"]
    assert neck.strides == dict(zip(features, STRIDES))
    group = mx.sym.Group(list(features.values()))
    shapes = {"c3": (2, 24, 56, 40), "c4": (2, 32, 28, 20), "c5": (2, 40, 14, 10)}
    args, outs, _ = group.infer_shape(**shapes)
    assert [o[2:] for o in outs] == [(56, 40), (28, 20), (14, 10), (7, 5), (4, 3)]
    assert all(o[:2] == (2, 16) for o in outs)
    arg_shapes = dict(zip(group.list_arguments(), args))
    assert arg_shapes["fpn_p6_conv_weight"] == (16, 40 if p6_input == "c5" else 16, 3, 3)
    assert arg_shapes["fpn_p7_conv_weight"] == (16, 16, 3, 3)
    assert not any(n.startswith("fpn_p2") for n in arg_shapes)
    with pytest.raises(ValueError, match="missing"):
        neck.get_features({"c4": c4, "c5": c5})


def tiny_cfg(**overrides):
    """A small RetinaNet on the photos fixture: ResNet-18 v1b at width 16, 16 channels."""
    cfg = RetinaNetConfig()
    cfg.pretrain = None
    cfg.dataset.synthetic = "photos"
    cfg.dataset.class_names = photos.CLASS_NAMES
    cfg.runtime.device, cfg.runtime.device_ids, cfg.runtime.kvstore = "cpu", (0,), "local"
    cfg.backbone.variant, cfg.backbone.depth, cfg.backbone.width = "v1b", 18, 16
    cfg.backbone.normalizer = "bn"
    cfg.neck.channels = 16
    cfg.head.conv_channels = 16
    cfg.input.short, cfg.input.long = 256, 384
    cfg.input.loader_workers = 0
    cfg.train.images_per_device = 2
    cfg.train.iters_at_batch16 = 1000
    cfg.train.lr_steps_at_batch16 = (500,)
    cfg.test.max_det = 50
    for key, value in overrides.items():
        cfg.set(key, value)
    return cfg.freeze()


def test_head_shares_one_set_of_weights_across_levels():
    cfg = tiny_cfg()
    model = RetinaNet(cfg)
    symbol = model.get_train_symbol()
    head_args = [n for n in symbol.list_arguments()
                 if n.startswith("retina_") and n not in model.train_data_names]
    expected = [f"retina_{layer}_{kind}" for layer in TOWER_LAYERS + ["cls_logit", "bbox_delta"]
                for kind in ("weight", "bias")]
    assert sorted(head_args) == sorted(expected)  # one set, not one per level
    nodes = json.loads(symbol.tojson())["nodes"]
    uses = {}
    for node in nodes:
        if node["op"] == "Convolution":
            weight = nodes[node["inputs"][1][0]]["name"]
            uses.setdefault(weight, []).append(node["name"])
    for layer in TOWER_LAYERS + ["cls_logit", "bbox_delta"]:
        assert sorted(uses[f"retina_{layer}_weight"]) == sorted(
            f"retina_{layer}_{level}" for level in ("p3", "p4", "p5", "p6", "p7"))
    args, _, _ = symbol.infer_shape(**model.train_data_shapes(2, 256, 384))
    shapes = dict(zip(symbol.list_arguments(), args))
    num_c = len(photos.CLASS_NAMES)
    assert shapes["retina_cls_logit_weight"] == (9 * num_c, 16, 3, 3)
    assert shapes["retina_bbox_delta_weight"] == (36, 16, 3, 3)
    assert shapes["retina_cls_conv1_weight"] == (16, 16, 3, 3)


def test_head_initializers():
    symbol = RetinaNet(tiny_cfg()).get_train_symbol()
    attrs = symbol.attr_dict()
    bias = json.loads(attrs["retina_cls_logit_bias"]["__init__"])
    assert bias[0] == "constant"
    assert bias[1]["value"] == pytest.approx(-math.log(0.99 / 0.01))
    for name in ("retina_cls_conv1_weight", "retina_bbox_conv4_weight", "retina_cls_logit_weight",
                 "retina_bbox_delta_weight"):
        assert json.loads(attrs[name]["__init__"]) == ["normal", {"sigma": 0.01}], name
    assert json.loads(attrs["retina_bbox_delta_bias"]["__init__"])[0] == "zero"
    assert "xavier" in attrs["fpn_p7_conv_weight"]["__init__"]


# --- a real-like batch ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def photos_batches():
    """(cfg, model, two training batches: one per bucket) from the real loader on the photos."""
    cfg = tiny_cfg(**{"train.images_per_device": 2})
    model = RetinaNet(cfg)
    prepare_dataset(cfg)
    records = build_dataset(cfg, "train", for_training=True).records
    batches = {}
    with build_train_loader(cfg, records, model, num_workers=0) as loader:
        for batch in loader:
            bucket = batch["data"].shape[2:]
            batches.setdefault(bucket, {k: v.copy() for k, v in batch.items()})
            if len(batches) == 2:
                break
    return cfg, model, batches


def bind(model, symbol, batch, names, for_training=True, contexts=(mx.cpu(0),)):
    fixed = select_params(symbol.list_arguments(), model.fixed_param_patterns())
    module = mx.mod.Module(symbol, data_names=list(names), label_names=None,
                           context=list(contexts), fixed_param_names=fixed)
    module.bind(data_shapes=[(k, batch[k].shape) for k in names], for_training=for_training)
    return module


def data_batch(batch, names):
    return mx.io.DataBatch([mx.nd.array(batch[k]) for k in names])


def test_photos_batches_are_real_like(photos_batches):
    cfg, _, batches = photos_batches
    assert set(batches) == {(256, 384), (384, 256)}  # landscape and portrait buckets
    for batch in batches.values():
        labels = batch["retina_label"]
        assert set(np.unique(labels)) <= {-1.0, 0.0} | set(range(1, len(cfg.dataset.class_names)
                                                                  + 1))
        assert (labels >= 1).sum(axis=1).min() > 0
        assert not np.isclose(batch["im_info"][:, 2], 1).any()  # non-unit scales
    counts = [int((b["gt_boxes"][:, :, 4] > 0).sum(axis=1).max()) for b in batches.values()]
    assert max(counts) >= 10


def test_train_step_has_finite_losses_and_gradients_reach_head_and_backbone(photos_batches):
    cfg, model, batches = photos_batches
    batch = batches[(384, 256)]
    symbol = model.get_train_symbol()
    module = bind(model, symbol, batch, model.train_data_names)
    mx.random.seed(0)
    module.init_params(model.initializer())
    module.forward(data_batch(batch, model.train_data_names), is_train=True)
    module.backward()
    losses = dict(zip(symbol.list_outputs(), (o.asnumpy() for o in module.get_outputs())))
    mx.nd.waitall()
    for name, value in losses.items():
        assert value.shape == (1,) and np.isfinite(value).all() and value[0] > 0, name
    # at prior 0.01 each foreground anchor costs 0.25 * 0.99^2 * log(100) = 1.13, the many
    # background anchors almost nothing: the untrained focal loss sits near 1.13
    assert losses["retina_cls_loss_output"][0] == pytest.approx(1.13, rel=0.3)
    names = module._exec_group.param_names
    grads = dict(zip(names, (g[0] for g in module._exec_group.grad_arrays)))
    nonzero = {n for n, g in grads.items() if g is not None and np.abs(g.asnumpy()).sum() > 0}
    for name, grad in grads.items():
        if grad is not None:
            assert np.isfinite(grad.asnumpy()).all(), name
    for name in ("retina_cls_logit_weight", "retina_bbox_delta_weight", "retina_cls_conv1_weight",
                 "retina_bbox_conv1_weight", "fpn_p7_conv_weight", "fpn_p3_lateral_weight",
                 "stage2_unit1_conv1_weight"):
        assert name in nonzero, name


def test_losses_fall_when_one_batch_is_fitted(photos_batches):
    cfg, model, batches = photos_batches
    batch = batches[(256, 384)]
    symbol = model.get_train_symbol()
    module = bind(model, symbol, batch, model.train_data_names)
    mx.random.seed(1)
    module.init_params(model.initializer())
    module.init_optimizer(optimizer="sgd", optimizer_params={
        "learning_rate": 0.1, "momentum": 0.9, "wd": 1e-4, "rescale_grad": 1.0,
        "clip_gradient": 10.0})
    history = []
    inputs = data_batch(batch, model.train_data_names)
    for _ in range(20):
        module.forward_backward(inputs)
        module.update()
        history.append([float(o.asnumpy()[0]) for o in module.get_outputs()])
    history = np.array(history)
    assert np.isfinite(history).all()
    first, last = history[:3].mean(axis=0), history[-5:].mean(axis=0)
    # measured: total 1.64 -> 1.32; the focal loss leaves its prior plateau slowly
    assert last.sum() < 0.85 * first.sum(), history
    assert last[0] < first[0] - 0.03, history  # the focal loss itself
    assert last[1] < 0.75 * first[1], history  # and the box loss


def test_test_symbol_gives_dets_decoded_into_original_pixels(photos_batches):
    cfg, model, batches = photos_batches
    batch = batches[(384, 256)]
    train = bind(model, model.get_train_symbol(), batch, model.train_data_names)
    mx.random.seed(0)
    train.init_params(model.initializer())
    arg_params, aux_params = train.get_params()
    # lower the prior bias so that the untrained model scores above the threshold
    arg_params["retina_cls_logit_bias"] = mx.nd.zeros_like(arg_params["retina_cls_logit_bias"])
    tester = bind(model, model.get_test_symbol(), batch, model.test_data_names,
                  for_training=False)
    tester.set_params(arg_params, aux_params)  # every test parameter comes from training
    tester.forward(data_batch(batch, model.test_data_names), is_train=False)
    dets = tester.get_outputs()[0].asnumpy()
    mx.nd.waitall()
    assert dets.shape == (2, cfg.test.max_det, 6) and np.isfinite(dets).all()
    used = dets[..., 5] >= 1
    assert used.all()  # probabilities ~0.5 everywhere: every slot is filled
    assert set(np.unique(dets[..., 5])) <= set(range(1, len(cfg.dataset.class_names) + 1))
    for b in range(2):
        height, width = batch["im_info"][b, :2]
        boxes = dets[b, :, :4]
        assert boxes.min() >= 0 and (boxes[:, 2] <= width - 1).all()
        assert (boxes[:, 3] <= height - 1).all()
        assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
        assert (np.diff(dets[b, :, 4]) <= 0).all()  # sorted by score
    sizes = [(int(round(h / s)), int(round(w / s))) for h, w, s in batch["im_info"]]
    results = model.decode_test_outputs([dets], batch["im_info"], sizes)
    for result, (height, width), info, image_dets in zip(results, sizes, batch["im_info"], dets):
        assert len(result["boxes"]) == cfg.test.max_det
        assert result["boxes"][:, 2].max() <= width and result["boxes"][:, 3].max() <= height
        np.testing.assert_allclose(result["scores"], image_dets[:, 4])


def test_loss_layout_of_the_logits_and_deltas_is_the_loaders():
    """The loss reads channel a * C + c of level l at (y, x) as anchor (l, a, y, x), class c + 1,
    the order of retina_label (and of retina_postprocess's channels), and the deltas in
    retina_target's raw (level, a * 4 + k, y, x) order."""
    model = RetinaNet(tiny_cfg())
    head = model.head
    num_a, num_c = 9, len(photos.CLASS_NAMES)
    sizes = [(4, 6), (2, 3), (1, 2), (1, 1), (1, 1)]
    logits = [mx.sym.var(f"l{i}") for i in range(5)]
    deltas = [mx.sym.var(f"d{i}") for i in range(5)]
    rng = np.random.default_rng(0)
    values = {f"l{i}": rng.standard_normal((2, num_a * num_c, h, w)) for i, (h, w) in
              enumerate(sizes)}
    values.update({f"d{i}": rng.standard_normal((2, 4 * num_a, h, w)) for i, (h, w) in
                   enumerate(sizes)})
    group = mx.sym.Group([head._anchor_logits(logits), head._flat_deltas(deltas)])
    executor = group.bind(mx.cpu(), {k: mx.nd.array(v) for k, v in values.items()})
    anchor_logits, flat_deltas = (o.asnumpy() for o in executor.forward())
    expected_logits, expected_deltas = [], []
    for i, (h, w) in enumerate(sizes):
        level = values[f"l{i}"].reshape(2, num_a, num_c, h, w)
        for a in range(num_a):
            for y in range(h):
                for x in range(w):
                    expected_logits.append(level[:, a, :, y, x])  # anchor (l, a, y, x)
        expected_deltas.append(values[f"d{i}"].reshape(2, -1))
    np.testing.assert_allclose(anchor_logits, np.stack(expected_logits, axis=1), rtol=1e-6)
    np.testing.assert_allclose(flat_deltas, np.concatenate(expected_deltas, axis=1), rtol=1e-6)


def test_head_norm_options_share_convs_and_gn_but_not_bn():
    levels = ("p3", "p4", "p5", "p6", "p7")
    gn = RetinaNet(tiny_cfg(**{"head.norm": "gn", "head.norm_groups": 8})).get_train_symbol()
    gn_args = [n for n in gn.list_arguments() if "_gn" in n]
    assert sorted(gn_args) == sorted(f"retina_{tower}_gn{i}_{kind}" for tower in ("cls", "bbox")
                                     for i in range(1, 5) for kind in ("gamma", "beta"))
    bn_model = RetinaNet(tiny_cfg(**{"head.norm": "bn"}))
    bn = bn_model.get_train_symbol()
    bn_args = [n for n in bn.list_arguments() if "_bn" in n and n.startswith("retina_")]
    assert sorted(bn_args) == sorted(
        f"retina_{tower}_bn{i}_{level}_{kind}" for tower in ("cls", "bbox")
        for i in range(1, 5) for level in levels for kind in ("gamma", "beta"))
    assert "retina_cls_bn4_p7_moving_var" in bn.list_auxiliary_states()
    conv_args = {n for n in bn.list_arguments() if n.startswith("retina_") and "_conv" in n}
    assert len(conv_args) == 2 * 4 * 2  # still one set of conv weights
    assert bn_model.anchor_levels(256, 384) == feature_levels(256, 384, STRIDES)
    _, out_shapes, _ = bn.infer_shape(**bn_model.train_data_shapes(2, 256, 384))
    assert out_shapes == [(1,), (1,)]
    with pytest.raises(Exception, match="must divide head.conv_channels"):
        tiny_cfg(**{"head.norm": "gn", "head.norm_groups": 32})
