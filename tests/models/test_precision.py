"""Mixed precision graphs: the listed components compute in bf16/fp16, everything numerically
fragile in float32, parameters float32; fp32 graphs are untouched. The dtypes are read from
the converted graphs by infer_type (tojson() hides amp_cast nodes)."""
import json
import warnings
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from simpledet.config import FasterRcnnConfig, load_config
from simpledet.data.anchor_target import assign_anchor_targets
from simpledet.detectors import FasterRcnn
from simpledet.models.precision import PrecisionPlan, op_names, output_dtypes

REPO = Path(__file__).resolve().parents[2]
SIZE = 64
# The default config's inputs: the class's names plus gt_crowd (roi_sampler.crowd_iof).
FLOAT_INPUTS = {name: "float32" for name in FasterRcnn.train_data_names + ("gt_crowd",)}

# Node outputs that must stay float32 whatever runs in low precision.
FP32_NODES = ("rpn_cls_prob_p2_output", "rpn_proposal_output0", "rpn_sampled_rois_output",
              "rpn_sampled_bbox_target_output", "roi_align_output", "rpn_cls_bce_sum_output",
              "rpn_reg_smooth_l1_output", "bbox_cls_ce_log_softmax_output",
              "bbox_reg_smooth_l1_output", "rpn_cls_logit_concat_output")


def tiny_cfg(precision="bf16", neck="fpn", **overrides):
    cfg = FasterRcnnConfig()
    cfg.precision = precision
    cfg.pretrain = None
    cfg.runtime.device = "cpu" if precision != "fp16" else "gpu"
    cfg.runtime.device_ids = (0,)
    cfg.neck.type = neck
    cfg.bbox_head.type = "2mlp" if neck == "fpn" else "c5"
    cfg.backbone.depth = 18
    cfg.backbone.width = 32
    cfg.backbone.normalizer = "bn"
    cfg.dataset.class_names = ("a", "b")
    cfg.neck.channels = 32
    cfg.rpn.conv_channels = 32
    cfg.rpn.anchor_scales = (2.0,) if neck == "fpn" else (2.0, 4.0)
    cfg.rpn.batch_per_image = 32
    cfg.rpn.train_pre_nms, cfg.rpn.train_post_nms = 100, 50
    cfg.rpn.test_pre_nms, cfg.rpn.test_post_nms = 100, 50
    cfg.roi_sampler.batch_per_image = 16
    cfg.bbox_head.fc_dim = 32
    cfg.input.max_num_gt = 4
    cfg.test.max_det = 10
    cfg.train.iters_at_batch16 = 1000
    cfg.train.lr_steps_at_batch16 = (500,)
    for key, value in overrides.items():
        cfg.set(key, value)
    cfg.freeze()
    return cfg


def train_dtypes(cfg):
    model = FasterRcnn(cfg)
    symbol = model.get_train_symbol()
    return model, symbol, output_dtypes(symbol, **FLOAT_INPUTS)


@pytest.mark.parametrize("precision,dtype", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_components_run_low_precision_and_fragile_ops_fp32(precision, dtype):
    _, fp32_symbol, _ = train_dtypes(tiny_cfg("fp32"))
    _, symbol, dtypes = train_dtypes(tiny_cfg(precision))
    # same parameters (checkpoints are interchangeable), all float32: master weights
    assert symbol.list_arguments() == fp32_symbol.list_arguments()
    assert symbol.list_auxiliary_states() == fp32_symbol.list_auxiliary_states()
    arg_types, _, aux_types = symbol.infer_type(**FLOAT_INPUTS)
    assert {np.dtype(t).name for t in arg_types + aux_types} == {"float32"}
    for low in ("conv0_output", "stage3_unit2_conv2_output", "fpn_p2_lateral_output",
                "fpn_p5_conv_output", "rpn_conv_3x3_p3_output", "rpn_cls_logit_p2_output",
                "rpn_bbox_delta_p6_output", "bbox_fc1_output", "bbox_cls_logit_output",
                "conv0_weight_amp_cast_" + dtype + "_output"):
        assert dtypes[low] == dtype, low
    for high in FP32_NODES:
        assert dtypes[high] == "float32", high
    assert [dtypes[n] for n in symbol.list_outputs()] == ["float32"] * 4
    # the low-precision ops are the components' convolutions and fc layers, nothing else
    assert sum(t == dtype for t in dtypes.values()) > 50


def test_only_the_listed_components_run_low_precision():
    _, _, dtypes = train_dtypes(tiny_cfg(**{"mixed_precision.components": ("backbone",)}))
    assert dtypes["conv0_output"] == dtypes["stage4_unit2_conv2_output"] == "bfloat16"
    for name in ("fpn_p2_lateral_output", "rpn_conv_3x3_p2_output", "bbox_fc1_output"):
        assert dtypes[name] == "float32", name


def test_c4_layout_res5_belongs_to_the_box_head():
    """The C5 head runs the backbone's res5 (same layer names): membership comes from the
    graph structure, not from names."""
    cfg = tiny_cfg(neck="none", **{"mixed_precision.components": ("bbox_head",)})
    _, _, dtypes = train_dtypes(cfg)
    assert dtypes["stage3_unit1_conv1_output"] == "float32"  # backbone (c4)
    assert dtypes["stage4_unit1_conv1_output"] == "bfloat16"  # res5 in the box head
    assert dtypes["bbox_cls_logit_output"] == "bfloat16"
    assert dtypes["rpn_conv_3x3_c4_output"] == "float32"


def test_test_symbol_decodes_in_fp32():
    model = FasterRcnn(tiny_cfg())
    symbol = model.get_test_symbol()
    dtypes = output_dtypes(symbol, data="float32", im_info="float32")
    assert dtypes["conv0_output"] == dtypes["bbox_fc2_output"] == "bfloat16"
    assert dtypes["bbox_cls_prob_output"] == dtypes["dets_output"] == "float32"


def test_fp32_graph_is_left_as_built():
    cfg = tiny_cfg("fp32")
    plan = PrecisionPlan.from_config(cfg)
    symbol = mx.sym.var("x") * 2
    plan.mark("backbone", [], [symbol])
    assert plan.apply(symbol, ["x"]) is symbol and not plan.low_precision_ops
    for path in (REPO / "config" / "faster_r50v1_fpn_1x.py",
                 REPO / "config" / "faster_r50v1c4_c5_512roi_1x.py"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = FasterRcnn(load_config(path))
        for built in (model.get_train_symbol(), model.get_test_symbol()):
            text = built.tojson(remove_amp_cast=False)
            assert "amp_cast" not in text and '"Cast"' not in text


def test_initializer_attributes_survive_the_conversion():
    _, symbol, _ = train_dtypes(tiny_cfg())
    attrs = symbol.attr_dict()
    assert "normal" in attrs["rpn_cls_logit_weight"]["__init__"]
    assert "xavier" in attrs["fpn_p2_conv_weight"]["__init__"]


def test_plan_records_op_nodes_between_inputs_and_outputs():
    x = mx.sym.var("x")
    a = mx.sym.relu(x, name="a")
    b = mx.sym.sigmoid(a, name="b")
    plan = PrecisionPlan("bf16", ("first", "second"))
    plan.mark("first", [x], [a])
    plan.mark("second", [a], [b])
    plan.mark("other", [x], [b])  # not a listed component: ignored
    assert plan.low_precision_ops == {"first": {"a"}, "second": {"b"}}
    assert op_names([b]) == {"a", "b"}
    with pytest.raises(ValueError, match="precision must be one of"):
        PrecisionPlan("int8")


# --- bf16 for real on CPU (MKLDNN) -----------------------------------------------------------

def tiny_batch(cfg, model):
    rng = np.random.default_rng(0)
    gt = np.full((2, cfg.input.max_num_gt, 5), -1, np.float32)
    gt[0, :2] = [[4, 6, 30, 40, 1], [20, 16, 60, 50, 2]]
    gt[1, 0] = [10, 10, 50, 40, 1]
    im_info = np.array([[SIZE, SIZE, 1.0]] * 2, np.float32)
    levels = model.rpn_levels(SIZE, SIZE)
    targets = [assign_anchor_targets(gt[b][gt[b, :, 4] > 0, :4], im_info[b], levels,
                                     cfg.rpn.anchor_scales, cfg.rpn.anchor_ratios, rng=rng,
                                     batch_size=cfg.rpn.batch_per_image) for b in range(2)]
    return {"data": rng.standard_normal((2, 3, SIZE, SIZE)).astype(np.float32),
            "im_info": im_info, "gt_boxes": gt,
            "rpn_label": np.stack([t["labels"] for t in targets]).astype(np.float32),
            "rpn_target": np.stack([t["targets"] for t in targets]),
            "rpn_weight": np.stack([t["weights"] for t in targets]),
            "gt_crowd": np.full((2, cfg.input.max_num_crowd, 4), -1, np.float32)}


def test_bf16_trains_on_cpu_with_finite_losses_and_fp32_weights():
    cfg = tiny_cfg("bf16")
    model = FasterRcnn(cfg)
    batch = tiny_batch(cfg, model)
    names = list(model.train_data_names)
    module = mx.mod.Module(model.get_train_symbol(), data_names=names, label_names=None,
                           context=[mx.cpu(0)])
    module.bind(data_shapes=[(k, batch[k].shape) for k in names])
    mx.random.seed(0)
    module.init_params(model.initializer())
    module.init_optimizer(optimizer="sgd", optimizer_params={
        "learning_rate": 0.01, "momentum": 0.9, "multi_precision": True})
    before = module.get_params()[0]["conv0_weight"].asnumpy()
    data_batch = mx.io.DataBatch([mx.nd.array(batch[k]) for k in names])
    for _ in range(2):
        module.forward_backward(data_batch)
        module.update()
        losses = [float(o.asnumpy()[0]) for o in module.get_outputs()]
        assert all(np.isfinite(losses)) and min(losses) >= 0, losses
    arg_params, _ = module.get_params()
    assert {np.dtype(v.dtype).name for v in arg_params.values()} == {"float32"}
    assert not np.array_equal(arg_params["conv0_weight"].asnumpy(), before)  # it trained

    tester = mx.mod.Module(model.get_test_symbol(), data_names=["data", "im_info"],
                           label_names=None)
    tester.bind(data_shapes=[("data", batch["data"].shape), ("im_info", (2, 3))],
                for_training=False)
    tester.set_params(*module.get_params())
    tester.forward(mx.io.DataBatch([mx.nd.array(batch["data"]), mx.nd.array(batch["im_info"])]),
                   is_train=False)
    dets = tester.get_outputs()[0].asnumpy()
    assert dets.shape == (2, cfg.test.max_det, 6) and np.isfinite(dets).all()


def test_low_precision_node_names_stay_unique():
    _, symbol, _ = train_dtypes(tiny_cfg())
    nodes = json.loads(symbol.tojson(remove_amp_cast=False))["nodes"]
    names = [n["name"] for n in nodes]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("precision,dtype", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_mask_rcnn_mask_head_runs_low_precision_targets_and_loss_fp32(precision, dtype):
    from simpledet.config.mask_rcnn import MaskRcnnConfig
    from simpledet.detectors import MaskRcnn

    cfg = MaskRcnnConfig()
    cfg.precision = precision
    cfg.runtime.device = "cpu" if precision != "fp16" else "gpu"
    cfg.pretrain = None
    cfg.backbone.depth = 18
    cfg.backbone.normalizer = "bn"
    cfg.neck.channels = cfg.rpn.conv_channels = cfg.mask_head.conv_channels = 16
    cfg.bbox_head.fc_dim = 16
    cfg.rpn.train_pre_nms, cfg.rpn.train_post_nms = 100, 50
    cfg.roi_sampler.batch_per_image = 16
    cfg.input.max_num_gt = 4
    cfg.mask_target.poly_len = 32
    cfg.test.max_det = 10
    cfg.freeze()
    assert "mask_head" in cfg.mixed_precision.components
    model = MaskRcnn(cfg)
    inputs = {name: "float32" for name in model.train_data_names}
    dtypes = output_dtypes(model.get_train_symbol(), **inputs)
    for low in ("mask_conv1_output", "mask_logit_output", "bbox_fc1_output"):
        assert dtypes[low] == dtype, low
    # MXNet's AMP lists: Deconvolution runs in fp16, but stays fp32 under bf16 (MKLDNN).
    assert dtypes["mask_deconv_output"] == ("float32" if precision == "bf16" else dtype)
    for high in ("mask_target_output", "mask_roi_align_output", "mask_bce_sum_output",
                 "mask_loss_output"):
        assert dtypes[high] == "float32", high
    test_dtypes = output_dtypes(model.get_test_symbol(), data="float32", im_info="float32")
    assert test_dtypes["mask_conv4_output"] == dtype
    assert test_dtypes["dets_output"] == test_dtypes["masks_output"] == "float32"


def retina_cfg(precision, **overrides):
    from simpledet.config import RetinaNetConfig

    cfg = RetinaNetConfig()
    cfg.precision = precision
    cfg.runtime.device = "cpu" if precision != "fp16" else "gpu"
    cfg.runtime.device_ids = (0,)
    cfg.pretrain = None
    cfg.backbone.depth = 18
    cfg.backbone.width = 16
    cfg.backbone.normalizer = "bn"
    cfg.neck.channels = cfg.head.conv_channels = 16
    cfg.dataset.class_names = ("a", "b", "c")
    cfg.test.max_det = 10
    for key, value in overrides.items():
        cfg.set(key, value)
    return cfg.freeze()


@pytest.mark.parametrize("precision,dtype", [("bf16", "bfloat16"), ("fp16", "float16")])
def test_retinanet_towers_run_low_precision_focal_loss_and_postprocess_fp32(precision, dtype):
    from simpledet.detectors import RetinaNet

    cfg = retina_cfg(precision)
    assert cfg.mixed_precision.components == ("backbone", "neck", "head")
    model = RetinaNet(cfg)
    fp32 = RetinaNet(retina_cfg("fp32")).get_train_symbol()
    symbol = model.get_train_symbol()
    assert symbol.list_arguments() == fp32.list_arguments()
    assert symbol.list_auxiliary_states() == fp32.list_auxiliary_states()
    inputs = {name: "float32" for name in model.train_data_names}
    arg_types, _, aux_types = symbol.infer_type(**inputs)
    assert {np.dtype(t).name for t in arg_types + aux_types} == {"float32"}
    dtypes = output_dtypes(symbol, **inputs)
    for low in ("conv0_output", "fpn_p3_lateral_output", "fpn_p6_conv_output",
                "fpn_p7_conv_output", "retina_cls_conv1_p3_output", "retina_cls_conv4_p7_output",
                "retina_bbox_conv2_p5_output", "retina_cls_logit_p3_output",
                "retina_bbox_delta_p7_output"):
        assert dtypes[low] == dtype, low
    for high in ("retina_cls_logit_concat_output", "retina_focal_loss_output",
                 "retina_bbox_delta_concat_output", "retina_reg_smooth_l1_output",
                 "retina_fg_count_sum_output", "retina_cls_loss_output",
                 "retina_reg_loss_output"):
        assert dtypes[high] == "float32", high
    test = model.get_test_symbol()
    test_dtypes = output_dtypes(test, data="float32", im_info="float32")
    assert test_dtypes["retina_cls_conv4_p3_output"] == dtype
    for high in ("retina_cls_prob_p3_output", "retina_cls_prob_p7_output", "dets_output"):
        assert test_dtypes[high] == "float32", high
    # only the head's and the neck's convolutions: nothing low precision without them
    only_backbone = output_dtypes(RetinaNet(retina_cfg(
        precision, **{"mixed_precision.components": ("backbone",)})).get_train_symbol(), **inputs)
    assert only_backbone["conv0_output"] == dtype
    assert only_backbone["fpn_p3_lateral_output"] == "float32"
    assert only_backbone["retina_cls_conv1_p3_output"] == "float32"


def test_retinanet_bf16_trains_on_cpu_and_detects():
    from simpledet.data.anchor_target import feature_levels
    from simpledet.data.targets.retina import assign_retina_targets
    from simpledet.detectors import RetinaNet

    cfg = retina_cfg("bf16")
    model = RetinaNet(cfg)
    rng = np.random.default_rng(0)
    gt = np.array([[4, 6, 40, 50], [20, 16, 60, 60]], np.float32)
    levels = feature_levels(SIZE, SIZE, model.feature_strides)
    targets = assign_retina_targets(gt, [1, 3], (SIZE, SIZE, 1.0), levels, cfg.anchors.scales,
                                    cfg.anchors.ratios)
    batch = {"data": rng.standard_normal((2, 3, SIZE, SIZE)).astype(np.float32),
             "im_info": np.array([[SIZE, SIZE, 1.0]] * 2, np.float32),
             "retina_label": np.stack([targets["labels"]] * 2),
             "retina_target": np.stack([targets["targets"]] * 2),
             "retina_weight": np.stack([targets["weights"]] * 2)}
    names = list(model.train_data_names)
    module = mx.mod.Module(model.get_train_symbol(), data_names=names, label_names=None,
                           context=[mx.cpu(0)])
    module.bind(data_shapes=[(k, batch[k].shape) for k in names])
    mx.random.seed(0)
    module.init_params(model.initializer())
    module.init_optimizer(optimizer="sgd", optimizer_params={
        "learning_rate": 0.01, "momentum": 0.9, "multi_precision": True})
    data_batch = mx.io.DataBatch([mx.nd.array(batch[k]) for k in names])
    for _ in range(2):
        module.forward_backward(data_batch)
        module.update()
        losses = [float(o.asnumpy()[0]) for o in module.get_outputs()]
        assert all(np.isfinite(losses)) and min(losses) > 0, losses
    arg_params, aux_params = module.get_params()
    assert {np.dtype(v.dtype).name for v in arg_params.values()} == {"float32"}
    tester = mx.mod.Module(model.get_test_symbol(), data_names=["data", "im_info"],
                           label_names=None)
    tester.bind(data_shapes=[("data", batch["data"].shape), ("im_info", (2, 3))],
                for_training=False)
    tester.set_params(arg_params, aux_params)
    tester.forward(mx.io.DataBatch([mx.nd.array(batch["data"]), mx.nd.array(batch["im_info"])]),
                   is_train=False)
    dets = tester.get_outputs()[0].asnumpy()
    assert dets.shape == (2, cfg.test.max_det, 6) and np.isfinite(dets).all()
