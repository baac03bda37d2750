"""Cascade R-CNN's wiring: the per-stage samplers (a RoI foreground at IoU 0.5 is background at
0.7), the decode between stages in the train and test graphs (NumPy, portrait bucket, two images
of different sizes), training steps on a tiny model (finite, decreasing losses, gradients in
every stage's head), the test graph's shapes and its score averaging checked by hand through
its internals, and the zoo configs' symbols."""
import warnings
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from simpledet.config import CascadeRcnnConfig, ConfigError, load_config
from simpledet.core.boxes import box_iou, clip_boxes, decode_boxes, encode_boxes
from simpledet.data import anchor_target as AT
from simpledet.data.transforms import bucket_shape
from simpledet.detectors import CascadeRcnn
from simpledet.engine.build import build_detector
from simpledet.ops import detection_postprocess

REPO = Path(__file__).resolve().parents[2]
CASCADE_CONFIGS = sorted(p for p in (REPO / "config").rglob("cascade_*.py")
                         if "_base" not in p.parts)
BUCKET = (160, 128)  # portrait
IM_INFO = np.array([[160, 128, 1.0], [140, 100, 0.8]], np.float32)
STAGES = ("1st", "2nd", "3rd")
LOSS_OUTPUTS = ["rpn_cls_loss_output", "rpn_reg_loss_output"] + [
    f"bbox_{kind}_loss_{s}_output" for s in STAGES for kind in ("cls", "reg")]


def tiny_cfg(**sampler):
    cfg = CascadeRcnnConfig()
    cfg.pretrain = None
    cfg.neck.type = "fpn"
    cfg.bbox_head.class_agnostic = True
    cfg.backbone.depth = 18
    cfg.backbone.width = 16
    cfg.backbone.normalizer = "bn"
    cfg.dataset.class_names = ("a", "b", "c")
    cfg.neck.channels = 16
    cfg.rpn.conv_channels = 16
    cfg.rpn.batch_per_image = 64
    cfg.rpn.train_pre_nms, cfg.rpn.train_post_nms = 200, 64
    cfg.rpn.test_pre_nms, cfg.rpn.test_post_nms = 100, 40
    cfg.roi_sampler.batch_per_image = 32
    cfg.roi_sampler.fg_fraction = 0.5
    cfg.roi_sampler.update(sampler)
    cfg.bbox_head.fc_dim = 32
    cfg.input.short, cfg.input.long = 128, 160
    cfg.input.max_num_gt = 4
    cfg.test.max_det = 20
    cfg.test.score_thresh = 0.0
    return cfg.freeze()


def tiny_batch(cfg, model, seed=0):
    """Two images of a portrait bucket: three boxes in the first, one in the second."""
    rng = np.random.default_rng(seed)
    gt = np.full((2, cfg.input.max_num_gt, 5), -1, np.float32)
    gt[0, :3] = [[8, 10, 60, 90, 1], [50, 70, 120, 150, 2], [20, 100, 50, 130, 3]]
    gt[1, :1] = [[30, 20, 90, 110, 2]]
    levels = model.rpn_levels(*BUCKET)
    targets = [AT.assign_anchor_targets(gt[b][gt[b, :, 4] > 0, :4], IM_INFO[b], levels,
                                        cfg.rpn.anchor_scales, cfg.rpn.anchor_ratios, rng=rng,
                                        batch_size=cfg.rpn.batch_per_image) for b in range(2)]
    data = rng.standard_normal((2, 3) + BUCKET).astype(np.float32)
    for b in range(2):  # something to learn: brighter boxes
        for x1, y1, x2, y2, c in gt[b][gt[b, :, 4] > 0]:
            data[b, int(c) - 1, int(y1):int(y2) + 1, int(x1):int(x2) + 1] += 2
    return {"data": data, "im_info": IM_INFO, "gt_boxes": gt,
            "rpn_label": np.stack([t["labels"] for t in targets]).astype(np.float32),
            "rpn_target": np.stack([t["targets"] for t in targets]),
            "rpn_weight": np.stack([t["weights"] for t in targets]),
            "gt_crowd": np.full((2, cfg.input.max_num_crowd, 4), -1, np.float32)}


def bind_internals(symbol, names, batch, model, params=None):
    internals = symbol.get_internals()
    group = mx.sym.Group([internals[n] for n in names])
    shapes = {k: v.shape for k, v in batch.items() if k in group.list_arguments()}
    exe = group.simple_bind(mx.cpu(), grad_req="null", **shapes)
    init = model.initializer()
    for name, array in exe.arg_dict.items():
        if name in batch:
            array[:] = batch[name]
        elif params is not None:
            array[:] = params[name]
        else:
            init(mx.init.InitDesc(name, attrs=group.attr_dict().get(name, {})), array)
    for name, array in exe.aux_dict.items():
        array[:] = params[name] if params is not None else (1 if name.endswith("_var") else 0)
    return exe


# --- samplers -------------------------------------------------------------------------------

def test_stage_samplers_use_their_iou_and_stds():
    """A RoI at IoU 0.65 with a gt box: foreground for stage 1 (0.5) and 2 (0.6), background
    for stage 3 (0.7); each stage encodes its target with its own stds."""
    model = CascadeRcnn(tiny_cfg(batch_per_image=4, fg_fraction=0.5))
    gt_box = [10, 10, 19, 19]
    near = [10, 10, 19, 15.5]  # 10 x 6.5 inside the 10 x 10 gt: IoU 0.65
    far = [60, 60, 80, 80]
    assert box_iou([near], [gt_box])[0, 0] == pytest.approx(0.65)
    rois = np.array([[0, *near], [0, *far]], np.float32)
    gt = np.array([[gt_box + [2], [-1] * 5]], np.float32)
    args = {"rois": mx.nd.array(rois), "gt_boxes": mx.nd.array(gt),
            "crowd": mx.nd.full((1, 1, 4), -1)}  # no crowd region
    crowd = mx.sym.var("crowd")
    samplers = [model.rpn_head.get_sampled_proposal(mx.sym.var("rois"), mx.sym.var("gt_boxes"),
                                                    crowd_boxes=crowd)]
    samplers += [model._sample(t, mx.sym.var("rois"), mx.sym.var("gt_boxes"), crowd)
                 for t in (1, 2)]
    stds = model.cfg.cascade.reg_std
    for t, (sampler, want) in enumerate(zip(samplers, (2, 2, 0))):
        mx.random.seed(0)
        out_rois, labels, targets, weights = (o.asnumpy() for o in mx.sym.Group(
            list(sampler)).bind(mx.cpu(), args).forward())
        assert labels.shape == (4,) and targets.shape == (4, 4)  # class agnostic
        rows = np.flatnonzero((out_rois[:, 1:] == rois[0, 1:]).all(axis=1))
        assert len(rows) >= 1, f"stage {t + 1} dropped the near roi"
        assert (labels[rows] == want).all(), f"stage {t + 1}"
        gt_rows = np.flatnonzero((out_rois[:, 1:] == gt[0, 0, :4]).all(axis=1))
        assert (labels[gt_rows] == 2).all() and len(gt_rows) == 1  # the gt joins every stage
        if want:
            np.testing.assert_allclose(targets[rows[0]], encode_boxes(
                [near], [gt_box], stds=stds[t])[0], rtol=1e-5, atol=1e-6)
            assert (weights[rows] == 1).all()
        else:
            assert (targets[rows] == 0).all() and (weights[rows] == 0).all()


def test_config_keeps_stage_one_consistent():
    cfg = tiny_cfg()
    assert cfg.cascade.num_stages == 3
    assert cfg.cascade.fg_iou == (0.5, 0.6, 0.7)
    assert cfg.cascade.loss_weight == (1.0, 0.5, 0.25)
    assert cfg.cascade.reg_std[2] == (0.033, 0.033, 0.067, 0.067)
    for key, value, match in (
            ("cascade.fg_iou", (0.4, 0.6, 0.7), "roi_sampler.fg_iou"),
            ("bbox_head.reg_std", (0.2, 0.2, 0.2, 0.2), "bbox_head.reg_std"),
            ("bbox_head.class_agnostic", False, "class_agnostic"),
            ("cascade.loss_weight", (1.0, 0.5), "one per stage"),
            ("neck.type", "none", "FPN or C5-reduce layout only")):
        broken = cfg.copy()
        broken.set(key, value)
        with pytest.raises(ConfigError, match=match):
            broken.freeze()


# --- the train graph on a batch -------------------------------------------------------------

TRAIN_INTERNALS = ("rpn_sampled_rois_output", "bbox_reg_delta_1st_output",
                   "bbox_decode_1st_output", "bbox_sampled_rois_2nd_output",
                   "bbox_sampled_label_2nd_output", "bbox_reg_delta_2nd_output",
                   "bbox_decode_2nd_output", "bbox_sampled_rois_3rd_output",
                   "bbox_sampled_label_3rd_output", "bbox_sampled_bbox_target_3rd_output")


@pytest.fixture(scope="module")
def train_internals():
    cfg = tiny_cfg()
    model = CascadeRcnn(cfg)
    batch = tiny_batch(cfg, model)
    mx.random.seed(0)
    exe = bind_internals(model.get_train_symbol(), TRAIN_INTERNALS, batch, model)
    # Large random regression weights, so that the decode moves the boxes for real.
    for t, name in enumerate(STAGES[:2]):
        exe.arg_dict[f"bbox_reg_delta_{name}_weight"][:] = mx.nd.random.normal(
            0, 0.05, exe.arg_dict[f"bbox_reg_delta_{name}_weight"].shape)
    values = [o.asnumpy() for o in exe.forward(is_train=True)]
    return cfg, batch, dict(zip(TRAIN_INTERNALS, values))


@pytest.mark.parametrize("stage", [0, 1])
def test_train_graph_decodes_each_stage_into_the_next_candidates(train_internals, stage):
    cfg, batch, out = train_internals
    name, following = STAGES[stage], STAGES[stage + 1]
    rois = out["rpn_sampled_rois_output" if stage == 0 else f"bbox_sampled_rois_{name}_output"]
    deltas = out[f"bbox_reg_delta_{name}_output"]
    decoded = out[f"bbox_decode_{name}_output"]
    assert np.abs(decoded - rois).max() > 1  # the boxes moved
    np.testing.assert_array_equal(decoded[:, 0], rois[:, 0])
    for b in range(2):
        rows = rois[:, 0] == b
        want = clip_boxes(decode_boxes(rois[rows, 1:], deltas[rows],
                                       stds=cfg.cascade.reg_std[stage]), *IM_INFO[b, :2])
        np.testing.assert_allclose(decoded[rows, 1:], want, atol=1e-3)
    # The next stage samples among those candidates and the gt, with its own IoU.
    per_image = cfg.roi_sampler.batch_per_image
    sampled = out[f"bbox_sampled_rois_{following}_output"].reshape(2, per_image, 5)
    labels = out[f"bbox_sampled_label_{following}_output"].reshape(2, per_image)
    for b in range(2):
        gt = batch["gt_boxes"][b]
        gt = gt[gt[:, 4] > 0]
        candidates = np.concatenate([decoded[decoded[:, 0] == b, 1:], gt[:, :4]])
        for row, label in zip(sampled[b], labels[b]):
            assert row[0] == b
            assert (np.abs(candidates - row[1:]).max(axis=1) < 1e-4).any()
            iou = box_iou(row[None, 1:], gt[:, :4])[0]
            if label > 0:
                assert iou.max() >= cfg.cascade.fg_iou[stage + 1] - 1e-6
                assert gt[iou.argmax(), 4] == label
            elif label == 0:
                assert iou.max() < cfg.cascade.fg_iou[stage + 1] + 1e-6


def test_third_stage_targets_use_its_stds(train_internals):
    cfg, batch, out = train_internals
    per_image = cfg.roi_sampler.batch_per_image
    rois = out["bbox_sampled_rois_3rd_output"].reshape(2, per_image, 5)
    labels = out["bbox_sampled_label_3rd_output"].reshape(2, per_image)
    targets = out["bbox_sampled_bbox_target_3rd_output"].reshape(2, per_image, 4)
    checked = 0
    for b in range(2):
        gt = batch["gt_boxes"][b]
        gt = gt[gt[:, 4] > 0]
        for r in np.flatnonzero(labels[b] > 0):
            match = gt[box_iou(rois[b, r, None, 1:], gt[:, :4])[0].argmax(), :4]
            want = encode_boxes(rois[b, r, None, 1:], match[None], stds=cfg.cascade.reg_std[2])
            np.testing.assert_allclose(targets[b, r], want[0], rtol=1e-4, atol=1e-4)
            checked += 1
    assert checked >= 4  # every gt box is a foreground candidate of the last stage at least


# --- training steps -------------------------------------------------------------------------

def test_train_symbol_shapes_and_a_few_steps_lower_the_losses():
    cfg = tiny_cfg()
    model = CascadeRcnn(cfg)
    symbol = model.get_train_symbol()
    assert symbol.list_outputs() == LOSS_OUTPUTS
    assert model.loss_names == tuple(n[:-len("_output")] for n in LOSS_OUTPUTS)
    shapes = model.train_data_shapes(2, *BUCKET)
    _, out_shapes, _ = symbol.infer_shape(**shapes)
    assert out_shapes == [(1,)] * len(LOSS_OUTPUTS)
    batch = tiny_batch(cfg, model)
    mx.random.seed(0)
    module = mx.mod.Module(symbol, data_names=list(model.train_data_names), label_names=None,
                           context=mx.cpu())
    module.bind(data_shapes=[(k, batch[k].shape) for k in model.train_data_names])
    module.init_params(model.initializer())
    module.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.02,
                                                             "momentum": 0.9})
    data = mx.io.DataBatch([mx.nd.array(batch[k]) for k in model.train_data_names])
    history = []
    for step in range(12):
        module.forward(data, is_train=True)
        module.backward()
        if step == 0:
            grads = dict(zip(module._exec_group.param_names, module._exec_group.grad_arrays))
            for name in STAGES:
                for layer in ("fc1", "cls_logit", "reg_delta"):
                    grad = grads[f"bbox_{layer}_{name}_weight"][0].asnumpy()
                    assert np.isfinite(grad).all() and np.abs(grad).max() > 0, (name, layer)
        module.update()
        history.append([o.asnumpy()[0] for o in module.get_outputs()])
    mx.nd.waitall()
    history = np.array(history)
    assert np.isfinite(history).all() and (history >= 0).all()
    total = history.sum(axis=1)
    assert total[-3:].mean() < 0.8 * total[:3].mean(), total
    for kind in ("cls",):
        for name in STAGES:
            column = LOSS_OUTPUTS.index(f"bbox_{kind}_loss_{name}_output")
            assert history[-3:, column].mean() < history[:3, column].mean(), (name, history)


def test_stage_losses_are_weighted():
    cfg = tiny_cfg()
    weighted = CascadeRcnn(cfg)
    unit = cfg.copy()
    unit.cascade.loss_weight = (1.0, 1.0, 1.0)
    unweighted = CascadeRcnn(unit.freeze())
    batch = tiny_batch(cfg, weighted)
    values = []
    for model in (weighted, unweighted):
        mx.random.seed(0)
        exe = bind_internals(model.get_train_symbol(), LOSS_OUTPUTS, batch, model,
                             params=None)
        mx.random.seed(0)
        values.append(dict(zip(LOSS_OUTPUTS, (o.asnumpy()[0] for o in exe.forward()))))
    for name, weight in zip(STAGES, cfg.cascade.loss_weight):
        for kind in ("cls", "reg"):
            key = f"bbox_{kind}_loss_{name}_output"
            assert values[0][key] == pytest.approx(weight * values[1][key], rel=1e-5), key


# --- the test graph -------------------------------------------------------------------------

TEST_INTERNALS = ("rpn_proposal_blockgrad_output", "bbox_reg_delta_1st_output",
                  "bbox_decode_1st_output", "bbox_reg_delta_2nd_output",
                  "bbox_decode_2nd_output", "roi_3rd_align_output",
                  "bbox_cls_prob_1st_3rd_output", "bbox_cls_prob_2nd_3rd_output",
                  "bbox_cls_prob_3rd_output", "bbox_cls_prob_mean_output",
                  "bbox_reg_delta_3rd_output", "dets_output")


def softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def head_probs(params, name, pooled):
    """A stage's 2MLP head and softmax in NumPy (float64)."""
    p = {k: params[f"bbox_{k}_{name}_weight"].asnumpy().astype(np.float64) for k in
         ("fc1", "fc2", "cls_logit")}
    b = {k: params[f"bbox_{k}_{name}_bias"].asnumpy().astype(np.float64) for k in
         ("fc1", "fc2", "cls_logit")}
    x = pooled.reshape(len(pooled), -1).astype(np.float64)
    x = np.maximum(x @ p["fc1"].T + b["fc1"], 0)
    x = np.maximum(x @ p["fc2"].T + b["fc2"], 0)
    return softmax(x @ p["cls_logit"].T + b["cls_logit"])


def test_test_graph_averages_every_head_on_the_last_stage_rois():
    cfg = tiny_cfg()
    model = CascadeRcnn(cfg)
    test = model.get_test_symbol()
    assert test.list_outputs() == ["dets_output"]
    _, out_shapes, _ = test.infer_shape(data=(2, 3) + BUCKET, im_info=(2, 3))
    assert out_shapes == [(2, cfg.test.max_det, 6)]
    train = model.get_train_symbol()
    assert set(test.list_arguments()) - set(model.test_data_names) <= set(
        train.list_arguments())
    batch = {"data": tiny_batch(cfg, model)["data"], "im_info": IM_INFO}
    mx.random.seed(3)
    exe = bind_internals(test, TEST_INTERNALS, batch, model)
    params = exe.arg_dict
    for name in STAGES:  # distinct heads, boxes that move
        for layer in ("cls_logit", "reg_delta"):
            weight = params[f"bbox_{layer}_{name}_weight"]
            weight[:] = mx.nd.random.normal(0, 0.05 if layer == "reg_delta" else 0.5,
                                            weight.shape)
    out = dict(zip(TEST_INTERNALS, (o.asnumpy() for o in exe.forward(is_train=False))))
    # the decode between stages: proposals -> 2nd -> 3rd stage rois
    previous = out["rpn_proposal_blockgrad_output"]
    for t, name in enumerate(STAGES[:2]):
        decoded = out[f"bbox_decode_{name}_output"]
        for b in range(2):
            rows = previous[:, 0] == b
            want = clip_boxes(decode_boxes(previous[rows, 1:], out[
                f"bbox_reg_delta_{name}_output"][rows], stds=cfg.cascade.reg_std[t]),
                *IM_INFO[b, :2])
            np.testing.assert_allclose(decoded[rows, 1:], want, atol=1e-3)
        previous = decoded
    # each head scores the stage-3 rois from the stage-3 pooled features, with its own weights
    pooled = out["roi_3rd_align_output"]
    probs = [out["bbox_cls_prob_1st_3rd_output"], out["bbox_cls_prob_2nd_3rd_output"],
             out["bbox_cls_prob_3rd_output"]]
    for name, prob in zip(STAGES, probs):
        np.testing.assert_allclose(prob, head_probs(params, name, pooled), atol=1e-5)
    assert np.abs(probs[0] - probs[1]).max() > 0.05  # the heads differ
    np.testing.assert_allclose(out["bbox_cls_prob_mean_output"], sum(probs) / 3, atol=1e-6)
    # the dets: averaged scores, stage 3's boxes of the stage-3 rois, shared post-processing
    want = detection_postprocess(
        mx.nd.array(previous), mx.nd.array(out["bbox_cls_prob_mean_output"]),
        mx.nd.array(out["bbox_reg_delta_3rd_output"]), mx.nd.array(IM_INFO),
        bbox_stds=cfg.cascade.reg_std[2], score_thresh=cfg.test.score_thresh,
        nms_threshold=cfg.test.nms_iou, max_det=cfg.test.max_det, class_agnostic=True)
    np.testing.assert_array_equal(out["dets_output"], want.asnumpy())
    assert (out["dets_output"][..., 5] >= 1).any()


# --- the zoo --------------------------------------------------------------------------------

@pytest.mark.parametrize("path", CASCADE_CONFIGS,
                         ids=lambda p: str(p.relative_to(REPO / "config")))
def test_cascade_configs_build_and_infer_shapes(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_config(path)
    model = build_detector(cfg)
    assert type(model) is CascadeRcnn
    portrait = bucket_shape(cfg.input.long, cfg.input.short, cfg.input.short, cfg.input.long)
    train = model.get_train_symbol()
    assert train.list_outputs() == LOSS_OUTPUTS
    _, out_shapes, _ = train.infer_shape(**model.train_data_shapes(
        cfg.train.images_per_device, *portrait))
    assert out_shapes == [(1,)] * len(LOSS_OUTPUTS)
    test = model.get_test_symbol()
    _, out_shapes, _ = test.infer_shape(data=(1, 3) + portrait, im_info=(1, 3))
    assert out_shapes == [(1, cfg.test.max_det, 6)]
    assert set(test.list_arguments()) - set(model.test_data_names) <= set(
        train.list_arguments())


def test_c5_red_config_mirrors_simpledet():
    """cascade_r50v2_c5_red_1x: SimpleDet's values (its config file), on the C5-reduce layout."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_config(REPO / "config" / "cascade_r50v2_c5_red_1x.py")
    assert (cfg.backbone.variant, cfg.backbone.depth) == ("v2", 50)
    assert cfg.pretrain_path == "pretrain_model/resnet-50-0000.params"
    assert (cfg.neck.type, cfg.neck.channels, cfg.bbox_head.type) == ("c5_reduce", 1024, "2mlp")
    assert cfg.rpn_feature_strides == cfg.roi_feature_strides == (16,)
    assert cfg.rpn.anchor_scales == (2.0, 4.0, 8.0, 16.0, 32.0) and cfg.rpn.conv_channels == 512
    assert (cfg.rpn.train_pre_nms, cfg.rpn.train_post_nms) == (12000, 2000)
    assert (cfg.rpn.test_pre_nms, cfg.rpn.test_post_nms) == (6000, 1000)
    assert (cfg.roi_sampler.batch_per_image, cfg.roi_sampler.fg_fraction) == (256, 0.25)
    assert cfg.roi_sampler.add_gt_as_proposals is False  # SimpleDet's proposal_wo_gt
    assert cfg.cascade.fg_iou == (0.5, 0.6, 0.7) and cfg.cascade.loss_weight == (1.0, 0.5, 0.25)
    assert cfg.bbox_head.class_agnostic and cfg.bbox_head.fc_dim == 1024
    assert (cfg.train.warmup_iters, cfg.train.warmup_factor, cfg.train.clip_gradient) == (
        3000, 0.0, 35.0)
    model = build_detector(cfg)
    assert model.backbone.strides["c5"] == 16  # res5 dilated, run once on the image


@pytest.mark.parametrize("precision,dtype", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_stage_heads_run_low_precision_decode_and_sampling_fp32(precision, dtype):
    import json

    from simpledet.models.precision import output_dtypes

    cfg = tiny_cfg().copy()
    cfg.precision = precision
    cfg.runtime.device = "cpu" if precision == "bf16" else "gpu"
    model = CascadeRcnn(cfg.freeze())
    train = model.get_train_symbol()
    dtypes = output_dtypes(train, **{name: "float32" for name in model.train_data_names})
    for name in STAGES:
        assert dtypes[f"bbox_fc1_{name}_output"] == dtype, name
        assert dtypes[f"bbox_{'cls' if name == '1st' else 'reg'}_loss_{name}_output"] == \
            "float32"
    for high in ("bbox_decode_1st_output", "bbox_decode_2nd_output",
                 "bbox_sampled_rois_3rd_output", "roi_3rd_align_output"):
        assert dtypes[high] == "float32", high
    nodes = json.loads(train.tojson(remove_amp_cast=False))["nodes"]
    assert len({n["name"] for n in nodes}) == len(nodes)
    test_dtypes = output_dtypes(model.get_test_symbol(), data="float32", im_info="float32")
    assert test_dtypes["bbox_fc2_1st_3rd_output"] == dtype
    for high in ("bbox_cls_prob_mean_output", "bbox_decode_2nd_output", "dets_output"):
        assert test_dtypes[high] == "float32", high


def test_every_stage_sampler_ignores_crowd_regions():
    model = CascadeRcnn(tiny_cfg())
    assert "gt_crowd" in model.train_data_names
    attrs = model.get_train_symbol().attr_dict()
    samplers = {k: v for k, v in attrs.items() if k.endswith("proposal_target")
                or "bbox_proposal_target_" in k}
    assert len(samplers) == 3, sorted(samplers)
    assert all(v.get("has_crowd") == "True" for v in samplers.values()), samplers
