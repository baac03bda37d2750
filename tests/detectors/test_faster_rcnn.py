"""FasterRcnn: every zoo config with an RPN (Faster R-CNN's part of the two-stage ones, and the
RPN-only ones as RpnDetector) builds train and test symbols whose shapes fit the loader's
batches, and a tiny model trains one step with finite losses and detects."""
import collections
import json
import math
import warnings
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from simpledet.config import FasterRcnnConfig, RpnConfig, load_config
from simpledet.core.boxes import box_iou
from simpledet.data.anchor_target import assign_anchor_targets, feature_levels, num_level_anchors
from simpledet.data.layout import batch_layout
from simpledet.data.transforms import bucket_shape
from simpledet.detectors import FasterRcnn, RpnDetector
from simpledet.models import select_params

REPO = Path(__file__).resolve().parents[2]
# the two-stage configs (RetinaNet's: tests/detectors/test_retinanet.py)
ZOO_CONFIGS = sorted(p for p in (REPO / "config").rglob("*.py")
                     if "_base" not in p.parts and not p.stem.startswith("retina"))
LOSS_OUTPUTS = ["rpn_cls_loss_output", "rpn_reg_loss_output", "bbox_cls_loss_output",
                "bbox_reg_loss_output"]


def load_quietly(path):
    """(config, detector): RpnDetector for the RPN-only configs, else FasterRcnn (the two-stage
    families' Faster R-CNN part: Mask and Cascade R-CNN have their own tests)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # notes a config may raise are not this test's subject
        cfg = load_config(path)
        return cfg, (RpnDetector(cfg) if isinstance(cfg, RpnConfig) else FasterRcnn(cfg))


def loader_batch_shapes(cfg, bucket, batch_size):
    """Shapes of the loader's training batch for the graph inputs of the config's family (the
    RPN-only graph reads data and the anchor targets; Faster R-CNN's also im_info, gt_boxes and,
    with roi_sampler.crowd_iof, gt_crowd): its layout (simpledet.data.layout) for the anchors of
    the loader's own level helper."""
    if isinstance(cfg, RpnConfig):
        names = RpnDetector.train_data_names
    else:
        names = FasterRcnn.train_data_names + (("gt_crowd",) if cfg.roi_sampler.crowd_iof
                                               else ())
    levels = feature_levels(*bucket, cfg.rpn_feature_strides)
    anchors = num_level_anchors(levels, cfg.rpn.anchor_scales, cfg.rpn.anchor_ratios)
    layout = batch_layout(batch_size, *bucket, cfg.input.max_num_gt)
    shapes = {name: layout[name][0] for name in ("data", "im_info", "gt_boxes")}
    shapes.update(rpn_label=(batch_size, anchors), rpn_target=(batch_size, 4 * anchors),
                  rpn_weight=(batch_size, 4 * anchors),
                  gt_crowd=(batch_size, cfg.input.max_num_crowd, 4))
    return {name: shapes[name] for name in names}


def family_test_outputs(cfg, batch):
    """[shape] of the family's test output: Faster dets (B, max_det, 6), RPN proposals
    (B, test_post_nms, 5)."""
    if isinstance(cfg, FasterRcnnConfig):
        return ["dets_output"], [(batch, cfg.test.max_det, 6)]
    assert isinstance(cfg, RpnConfig)
    return ["proposals_output"], [(batch, cfg.rpn.test_post_nms, 5)]


@pytest.mark.parametrize("path", ZOO_CONFIGS, ids=lambda p: str(p.relative_to(REPO / "config")))
def test_every_config_builds_and_infers_shapes(path):
    cfg, model = load_quietly(path)
    landscape = bucket_shape(cfg.input.short, cfg.input.long, cfg.input.short, cfg.input.long)
    portrait = bucket_shape(cfg.input.long, cfg.input.short, cfg.input.short, cfg.input.long)
    for bucket in (landscape, portrait):
        assert model.rpn_levels(*bucket) == feature_levels(*bucket, cfg.rpn_feature_strides)
        shapes = loader_batch_shapes(cfg, bucket, cfg.train.images_per_device)
        assert model.train_data_shapes(cfg.train.images_per_device, *bucket) == shapes
    train = model.get_train_symbol()
    assert train.list_outputs() == [f"{n}_output" for n in model.loss_names]
    _, out_shapes, _ = train.infer_shape(**loader_batch_shapes(cfg, landscape,
                                                               cfg.train.images_per_device))
    assert out_shapes == [(1,)] * len(model.loss_names)
    test = model.get_test_symbol()
    batch = cfg.test.images_per_device
    outputs, shapes = family_test_outputs(cfg, batch)
    assert test.list_outputs() == outputs
    _, out_shapes, _ = test.infer_shape(data=(batch, 3) + portrait, im_info=(batch, 3))
    assert out_shapes == shapes
    train_inputs = set(train.list_arguments()) | set(train.list_auxiliary_states())
    test_params = set(test.list_arguments()) - set(model.test_data_names)
    assert test_params <= train_inputs  # a training checkpoint has every test parameter
    assert set(test.list_auxiliary_states()) <= train_inputs


@pytest.mark.parametrize("name", ["faster_r50v1_fpn_1x", "faster_r50v1c4_c5_512roi_1x",
                                  "rpn_r50v1_fpn_1x"])
def test_graph_node_names_are_unique_and_prefixed(name):
    _, model = load_quietly(REPO / "config" / f"{name}.py")
    backbone_names = ("conv0", "bn0", "relu0", "pool0", "stage", "bn_data", "bn1", "relu1")
    for symbol in (model.get_train_symbol(), model.get_test_symbol()):
        nodes = json.loads(symbol.tojson())["nodes"]
        counts = collections.Counter(n["name"] for n in nodes)
        assert [k for k, v in counts.items() if v > 1] == []
        ops = [n["name"] for n in nodes if n["op"] != "null"]
        strays = [n for n in ops if not n.startswith(
            backbone_names + ("fpn_", "rpn_", "roi_", "bbox_", "dets", "proposals"))]
        assert strays == []


def test_data_and_label_names():
    assert FasterRcnn.train_data_names == ("data", "im_info", "gt_boxes", "rpn_label",
                                           "rpn_target", "rpn_weight")
    assert FasterRcnn.test_data_names == ("data", "im_info")
    assert FasterRcnn.label_names == ()


def test_add_gt_as_proposals_false_changes_the_sampled_rows():
    # The 256-RoI v2 config keeps the gt boxes out of the proposals: it builds without a warning
    # and its sampler sees only the proposals. Here only the gt itself would be foreground.
    path = REPO / "config" / "faster_r50v2c4_c5_256roi_1x.py"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        without_gt = FasterRcnn(load_config(path))
    assert without_gt.cfg.roi_sampler.add_gt_as_proposals is False
    with_gt = FasterRcnn(load_config(path, ["roi_sampler.add_gt_as_proposals=True"]))
    rois = np.array([[0, 5, 0, 14, 9], [0, 20, 20, 30, 30]], np.float32)  # IoU 1/3 and 0
    gt = np.array([[[0, 0, 9, 9, 1], [-1, -1, -1, -1, -1]]], np.float32)

    def sample(model):  # an image without crowd regions
        outs = model.rpn_head.get_sampled_proposal(mx.sym.var("rois"), mx.sym.var("gt_boxes"),
                                                   crowd_boxes=mx.sym.var("gt_crowd"))
        exe = mx.sym.Group(list(outs)).bind(mx.cpu(), {"rois": mx.nd.array(rois),
                                                       "gt_boxes": mx.nd.array(gt),
                                                       "gt_crowd": -mx.nd.ones((1, 2, 4))})
        return [o.asnumpy() for o in exe.forward()]

    mx.random.seed(0)
    rows, labels, _, weights = sample(without_gt)
    assert labels.shape == (256,) and (labels == 0).all() and weights.sum() == 0
    assert not (rows[:, 1:] == gt[0, 0, :4]).all(axis=1).any()
    rows, labels, _, weights = sample(with_gt)
    np.testing.assert_array_equal(rows[0], [0, 0, 0, 9, 9])
    np.testing.assert_array_equal(labels[:2], [1, 0])
    assert (labels > 0).sum() == 1 and weights.sum() > 0


@pytest.mark.parametrize("normalizer", ["gn", "syncbn", "bn"])
def test_normalizers_build_the_c4_detector(normalizer):
    cfg = load_config(REPO / "config" / "faster_r50v1c4_c5_512roi_1x.py",
                      [f"backbone.normalizer={normalizer}", "runtime.device_ids=(0, 1)"])
    model = FasterRcnn(cfg)
    _, out_shapes, _ = model.get_train_symbol().infer_shape(
        **model.train_data_shapes(2, 512, 640))
    assert out_shapes == [(1,)] * 4


# --- a tiny model, run for real --------------------------------------------------------------

SIZE = 128


def tiny_cfg(neck="fpn", normalizer="bn", num_devices=1, crowd_iof=0.7):
    cfg = FasterRcnnConfig()
    cfg.roi_sampler.crowd_iof = crowd_iof
    cfg.pretrain = None
    cfg.neck.type = neck
    cfg.bbox_head.type = "c5" if neck == "none" else "2mlp"
    cfg.bbox_head.class_agnostic = neck != "fpn"
    cfg.backbone.depth = 18
    cfg.backbone.normalizer = normalizer
    cfg.runtime.device_ids = tuple(range(num_devices))
    cfg.dataset.class_names = ("a", "b")
    cfg.neck.channels = 32
    cfg.rpn.conv_channels = 32
    if neck != "fpn":
        cfg.rpn.anchor_scales = (2.0, 4.0, 8.0)
    cfg.rpn.batch_per_image = 64
    cfg.rpn.train_pre_nms, cfg.rpn.train_post_nms = 200, 100
    cfg.rpn.test_pre_nms, cfg.rpn.test_post_nms = 100, 50
    cfg.roi_sampler.batch_per_image = 32
    cfg.bbox_head.fc_dim = 64
    cfg.input.max_num_gt = 4
    cfg.test.max_det = 20
    cfg.train.iters_at_batch16 = 1000
    cfg.train.lr_steps_at_batch16 = (500,)
    cfg.freeze()
    return cfg


def tiny_batch(cfg, model):
    """Two 128x128 images: two boxes in the first, none in the second (gt rows all -1); with
    roi_sampler.crowd_iof, a crowd region in the lower left of the first (CROWD_REGION) and
    none in the second (rows of -1)."""
    rng = np.random.default_rng(0)
    gt = np.full((2, cfg.input.max_num_gt, 5), -1, np.float32)
    gt[0, :2] = [[10, 10, 60, 70, 1], [50, 40, 120, 100, 2]]
    im_info = np.array([[SIZE, SIZE, 1.0], [100, SIZE, 1.0]], np.float32)
    levels = model.rpn_levels(SIZE, SIZE)
    targets = [assign_anchor_targets(gt[b][gt[b, :, 4] > 0, :4], im_info[b], levels,
                                     cfg.rpn.anchor_scales, cfg.rpn.anchor_ratios, rng=rng,
                                     batch_size=cfg.rpn.batch_per_image) for b in range(2)]
    return {"data": rng.standard_normal((2, 3, SIZE, SIZE)).astype(np.float32),
            "im_info": im_info, "gt_boxes": gt,
            "rpn_label": np.stack([t["labels"] for t in targets]).astype(np.float32),
            "rpn_target": np.stack([t["targets"] for t in targets]),
            "rpn_weight": np.stack([t["weights"] for t in targets]),
            **({"gt_crowd": crowd_rows(cfg, [CROWD_REGION], [])} if model.uses_crowd else {})}


CROWD_REGION = [0, 80, 63, 127]  # image 0's lower left, touching its second box


def crowd_rows(cfg, *images):
    """gt_crowd (B, max_num_crowd, 4): each image's regions, then rows of -1."""
    rows = np.full((len(images), cfg.input.max_num_crowd, 4), -1, np.float32)
    for b, regions in enumerate(images):
        rows[b, :len(regions)] = np.reshape(regions, (-1, 4))
    return rows


def train_step(cfg, contexts):
    mx.random.seed(0)
    model = FasterRcnn(cfg)
    symbol = model.get_train_symbol()
    batch = tiny_batch(cfg, model)
    fixed = select_params(symbol.list_arguments(), model.fixed_param_patterns())
    module = mx.mod.Module(symbol, data_names=list(model.train_data_names), label_names=None,
                           context=contexts, fixed_param_names=fixed)
    module.bind(data_shapes=[(k, batch[k].shape) for k in model.train_data_names])
    module.init_params(model.initializer())
    module.forward(mx.io.DataBatch([mx.nd.array(batch[k]) for k in model.train_data_names]),
                   is_train=True)
    module.backward()
    mx.nd.waitall()
    return model, module, batch, fixed


@pytest.mark.parametrize("neck,normalizer", [("fpn", "bn"), ("none", "gn"), ("c5_reduce", "bn")])
def test_tiny_model_trains_one_step_with_finite_losses(neck, normalizer):
    cfg = tiny_cfg(neck, normalizer)
    _, module, _, fixed = train_step(cfg, [mx.cpu(0)])
    losses = dict(zip(module.output_names, (o.asnumpy() for o in module.get_outputs())))
    assert list(losses) == LOSS_OUTPUTS
    for name, value in losses.items():
        assert value.shape == (1,) and np.isfinite(value).all() and value[0] >= 0, name
    # untrained: sigmoid and softmax over 3 classes sit near their chance losses
    assert losses["rpn_cls_loss_output"][0] == pytest.approx(math.log(2), rel=0.1)
    assert losses["bbox_cls_loss_output"][0] == pytest.approx(math.log(3), rel=0.2)
    grads = module._exec_group.grad_arrays
    names = module._exec_group.param_names
    assert fixed and not set(fixed) & {n for n, g in zip(names, grads) if g[0] is not None}
    nonzero = set()
    for name, grad in zip(names, grads):
        if grad[0] is not None:
            value = grad[0].asnumpy()
            assert np.isfinite(value).all(), name
            if value.any():
                nonzero.add(name)
    for name in ("rpn_cls_logit_weight", "rpn_bbox_delta_weight", "bbox_cls_logit_weight",
                 "stage2_unit1_conv1_weight"):
        assert name in nonzero


def crowd_iof_above(boxes, region, thresh):
    """(N,) bool: the region covers more than thresh of each box's own area ("+1" pixels)."""
    iw = np.minimum(boxes[:, 2], region[2]) - np.maximum(boxes[:, 0], region[0]) + 1
    ih = np.minimum(boxes[:, 3], region[3]) - np.maximum(boxes[:, 1], region[1]) + 1
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    return np.clip(iw, 0, None) * np.clip(ih, 0, None) > thresh * area


@pytest.mark.parametrize("crowd_iof", [0.7, None])
def test_crowd_regions_are_a_graph_input_that_ignores_background_rois(crowd_iof):
    # roi_sampler.crowd_iof (default 0.7): the train graph takes gt_crowd (after the RPN
    # targets), infers shapes, trains a step, and image 0's background rows stay off its crowd
    # region; None: no gt_crowd input, and background rows are sampled inside the region.
    cfg = tiny_cfg(crowd_iof=crowd_iof)
    model = FasterRcnn(cfg)
    symbol = model.get_train_symbol()
    assert model.uses_crowd is bool(crowd_iof)
    assert ("gt_crowd" in symbol.list_arguments()) is bool(crowd_iof)
    expected = FasterRcnn.train_data_names + (("gt_crowd",) if crowd_iof else ())
    assert model.train_data_names == expected
    shapes = model.train_data_shapes(2, SIZE, SIZE)
    if crowd_iof:
        assert shapes["gt_crowd"] == (2, cfg.input.max_num_crowd, 4)
    _, out_shapes, _ = symbol.infer_shape(**shapes)
    assert out_shapes == [(1,)] * 4
    internals = symbol.get_internals()
    group = mx.sym.Group([symbol] + [internals[f"rpn_{n}_output"] for n in (
        "proposal_blockgrad", "sampled_rois", "sampled_label")])
    batch = tiny_batch(cfg, model)
    assert set(batch) == set(model.train_data_names)
    names = list(model.train_data_names)
    mx.random.seed(0)
    module = mx.mod.Module(group, data_names=names, label_names=None, context=mx.cpu())
    module.bind(data_shapes=[(k, batch[k].shape) for k in names])
    module.init_params(model.initializer())
    module.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.01})
    module.forward_backward(mx.io.DataBatch([mx.nd.array(batch[k]) for k in names]))
    module.update()
    outputs = [o.asnumpy() for o in module.get_outputs()]
    for loss in outputs[:4]:
        assert loss.shape == (1,) and np.isfinite(loss).all()
    proposals, rois, labels = outputs[4:]
    per_image = cfg.roi_sampler.batch_per_image
    rows, image_labels = rois[:per_image, 1:], labels[:per_image]
    gts = batch["gt_boxes"][0, :2, :4]
    # Image 0's proposals that would be background in the region: the rule has work to do.
    image_proposals = proposals.reshape(2, -1, 5)[0, :, 1:]
    would_be_bg = box_iou(image_proposals, gts).max(axis=1) < cfg.roi_sampler.bg_iou_hi
    assert (would_be_bg & crowd_iof_above(image_proposals, CROWD_REGION, 0.7)).sum() >= 10
    bg_in_region = crowd_iof_above(rows[image_labels == 0], CROWD_REGION, 0.7)
    assert (image_labels == 0).sum() > 0
    assert not bg_in_region.any() if crowd_iof else bg_in_region.any()
    assert (image_labels > 0).any()  # fg rows as usual


@pytest.mark.parametrize("normalizer", ["bn", "syncbn"])
def test_two_contexts_split_the_batch_and_an_image_without_boxes_alone_is_finite(normalizer):
    _, module, _, _ = train_step(tiny_cfg(normalizer=normalizer, num_devices=2),
                                 [mx.cpu(0), mx.cpu(1)])
    outputs = dict(zip(module.output_names, module.get_outputs(merge_multi_context=False)))
    for name, per_device in outputs.items():
        assert len(per_device) == 2
        for value in per_device:
            assert value.shape == (1,) and np.isfinite(value.asnumpy()).all(), name
    # the second device holds the image without boxes: nothing to regress there
    assert outputs["bbox_reg_loss_output"][1].asnumpy()[0] == 0
    assert outputs["rpn_reg_loss_output"][1].asnumpy()[0] == 0


def test_test_symbol_gives_dets_in_the_output_layout():
    cfg = tiny_cfg()
    model, module, batch, _ = train_step(cfg, [mx.cpu(0)])
    arg_params, aux_params = module.get_params()
    tester = mx.mod.Module(model.get_test_symbol(), data_names=list(model.test_data_names),
                           label_names=None)
    tester.bind(data_shapes=[("data", batch["data"].shape), ("im_info", (2, 3))],
                for_training=False)
    tester.set_params(arg_params, aux_params)  # every test parameter comes from training
    tester.forward(mx.io.DataBatch([mx.nd.array(batch["data"]), mx.nd.array(batch["im_info"])]),
                   is_train=False)
    dets = tester.get_outputs()[0].asnumpy()
    mx.nd.waitall()
    assert dets.shape == (2, cfg.test.max_det, 6)
    assert np.isfinite(dets).all()
    used = dets[..., 4] > 0
    assert (dets[~used] == -1).all()  # unused rows are all -1
    assert used.any()  # an untrained model still scores above 0.05 somewhere
    boxes, classes = dets[used][:, :4], dets[used][:, 5]
    assert set(np.unique(classes)) <= {1.0, 2.0}
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()
    assert boxes.min() >= 0 and boxes.max() <= SIZE - 1


def test_head_initializers():
    model = FasterRcnn(tiny_cfg())
    symbol = model.get_train_symbol()
    attrs = symbol.attr_dict()
    assert "normal" in attrs["rpn_cls_logit_weight"]["__init__"]
    assert "0.001" in attrs["bbox_reg_delta_weight"]["__init__"]
    assert "xavier" in attrs["fpn_p2_conv_weight"]["__init__"]
    assert "__init__" not in attrs.get("stage1_unit1_conv1_weight", {})  # global MSRA init
    assert isinstance(model.initializer(), mx.init.Xavier)
