"""The RPN-only family (simpledet.detectors.rpn, simpledet.config.rpn): its config on the common
base with Faster R-CNN's rpn section shared, the detector on the contract of base.py (train
graph: RPN losses only; test graph: the proposals with their scores), decoding the proposals
into original pixels without the op's padding rows, and a tiny model run for real."""
import math
import warnings
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from simpledet.benchmark import synthetic
from simpledet.config import ConfigError, FasterRcnnConfig, RpnConfig, load_config
from simpledet.config import faster_rcnn as faster_schema
from simpledet.config.common import DetectorConfig
from simpledet.data.anchor_target import assign_anchor_targets
from simpledet.data.layout import batch_layout
from simpledet.detectors import Detector, FasterRcnn, RpnDetector
from simpledet.detectors.rpn import proposal_count
from simpledet.engine.build import build_detector
from simpledet.models import select_params
from simpledet.models.precision import output_dtypes

REPO = Path(__file__).resolve().parents[2]
SHAPES_RPN = REPO / "config" / "shapes" / "rpn_fpn.py"
ZOO_RPN = REPO / "config" / "rpn_r50v1_fpn_1x.py"
SIZE = 128


# --- the config ---------------------------------------------------------------------------------

def test_build_detector_dispatches_to_the_rpn_family():
    cfg = load_config(SHAPES_RPN)
    assert type(cfg) is RpnConfig and RpnConfig.detector_class is RpnDetector
    detector = build_detector(cfg)
    assert type(detector) is RpnDetector and isinstance(detector, Detector)
    assert detector.cfg is cfg


def test_sections_are_the_rpn_stage_only_and_shared_with_faster():
    rpn, faster = RpnConfig(), FasterRcnnConfig()
    common = set(DetectorConfig().field_names())
    assert set(rpn.field_names()) == common | {"backbone", "neck", "rpn"}
    assert not {"roi_sampler", "roi_extractor", "bbox_head"} & set(rpn.field_names())
    assert set(rpn.field_names()) < set(faster.field_names())
    # one definition of each shared section and derived value: Faster's first stage
    assert type(rpn.rpn) is faster_schema.RpnConfig is type(faster.rpn)
    assert type(rpn.backbone) is type(faster.backbone) and type(rpn.neck) is type(faster.neck)
    assert rpn.rpn == faster.rpn  # same defaults
    assert "rpn_feature_strides" in rpn.derived_names()
    assert "roi_feature_strides" not in rpn.derived_names()
    for neck_type, layout in faster_schema.LAYOUTS.items():
        cfg = RpnConfig(pretrain=None)
        cfg.neck.type = neck_type
        assert cfg.layout() is layout and cfg.rpn_feature_strides == layout.rpn_feature_strides
    assert rpn.auto_pretrain_path() == "pretrain_model/resnet-v1-50-0000.params"


def test_precision_components_are_declared_by_the_family():
    assert RpnConfig.precision_components == RpnDetector.precision_components == (
        "backbone", "neck", "rpn_head")
    assert RpnConfig().mixed_precision.components == ("backbone", "neck", "rpn_head")
    with pytest.raises(ConfigError, match=r"has \['bbox_head'\], not components of RpnConfig"):
        load_config(SHAPES_RPN, ["mixed_precision.components=('backbone', 'bbox_head')"])


def test_roi_keys_are_unknown_with_a_suggestion():
    with pytest.raises(ConfigError, match="unknown key 'bbox_head.fc_dim'"):
        load_config(SHAPES_RPN, ["bbox_head.fc_dim=64"])


def test_zoo_and_quickstart_values():
    zoo = load_config(ZOO_RPN)
    assert (zoo.backbone.variant, zoo.backbone.depth, zoo.neck.type) == ("v1", 50, "fpn")
    assert zoo.rpn_feature_strides == (4, 8, 16, 32, 64)
    assert (zoo.rpn.test_pre_nms, zoo.rpn.test_post_nms) == (1000, 1000)  # AR@1000 needs 1000
    assert zoo.max_iter == 90000 and zoo.lr_steps == (60000, 80000)
    # the rpn section of the zoo RPN is the one of the zoo Faster R-CNN of the same backbone
    faster = load_config(REPO / "config" / "faster_r50v1_fpn_1x.py")
    assert zoo.rpn.anchor_scales == faster.rpn.anchor_scales
    assert zoo.backbone == faster.backbone and zoo.neck == faster.neck
    quick = load_config(SHAPES_RPN)
    assert quick.dataset.synthetic == "shapes" and quick.runtime.device == "cpu"
    assert quick.rpn.test_post_nms >= 1000


# --- the detector on the contract ---------------------------------------------------------------

def test_data_loss_and_eval_names():
    assert RpnDetector.train_data_names == ("data", "rpn_label", "rpn_target", "rpn_weight")
    assert RpnDetector.test_data_names == ("data", "im_info")
    assert RpnDetector.loss_names == ("rpn_cls_loss", "rpn_reg_loss")
    assert RpnDetector.label_names == ()
    assert RpnDetector.eval_types == ("proposal",)
    assert FasterRcnn.eval_types == ("bbox",)  # the subclass keeps its own


def test_batch_layout_and_targets_are_the_rpn_anchor_assigners():
    cfg = load_config(SHAPES_RPN, ["input.short=64", "input.long=96"])
    detector, faster = RpnDetector(cfg), FasterRcnn(load_config(
        REPO / "config" / "shapes" / "faster_fpn.py", ["input.short=64", "input.long=96"]))
    bucket = (64, 96)
    (assigner,) = detector.target_assigners([bucket])
    faster_assigner, crowd = faster.target_assigners([bucket])  # Faster adds the crowd regions
    assert type(crowd).__name__ == "CrowdRegionAssigner"
    assert type(assigner) is type(faster_assigner)
    assert vars(assigner).keys() == vars(faster_assigner).keys()
    assert assigner.outputs(*bucket) == faster_assigner.outputs(*bucket)
    shapes = detector.train_data_shapes(2, *bucket)
    layout = batch_layout(2, *bucket, cfg.input.max_num_gt, [assigner])
    assert shapes == {name: layout[name][0] for name in RpnDetector.train_data_names}
    # the loader's batch holds every graph input (and more: im_info, gt_boxes stay unread)
    sample = synthetic.make_images(2, 64, 96, cfg.num_classes)
    batch = synthetic.training_batch(cfg, [assigner], sample, bucket)
    assert {name: batch[name].shape for name in shapes} == shapes
    _, out_shapes, _ = detector.get_train_symbol().infer_shape(**shapes)
    assert out_shapes == [(1,), (1,)]


def test_symbols_read_their_inputs_and_test_params_come_from_training():
    cfg = load_config(SHAPES_RPN)
    detector = RpnDetector(cfg)
    train, test = detector.get_train_symbol(), detector.get_test_symbol()
    assert train.list_outputs() == ["rpn_cls_loss_output", "rpn_reg_loss_output"]
    assert set(detector.train_data_names) <= set(train.list_arguments())
    assert not {"im_info", "gt_boxes"} & set(train.list_arguments())
    assert test.list_outputs() == ["proposals_output"]
    _, out_shapes, _ = test.infer_shape(data=(3, 3, 320, 256), im_info=(3, 3))
    assert out_shapes == [(3, cfg.rpn.test_post_nms, 5)]
    train_inputs = set(train.list_arguments()) | set(train.list_auxiliary_states())
    assert set(test.list_arguments()) - {"data", "im_info"} <= train_inputs
    assert set(test.list_auxiliary_states()) <= train_inputs
    # Faster R-CNN's first stage: every RPN parameter has the name a Faster model gives it
    faster = FasterRcnn(load_config(REPO / "config" / "shapes" / "faster_fpn.py"))
    assert set(train.list_arguments()) <= set(faster.get_train_symbol().list_arguments())


def test_bf16_runs_the_components_low_and_the_proposals_fp32():
    cfg = load_config(SHAPES_RPN, ["precision=bf16"])
    dtypes = output_dtypes(RpnDetector(cfg).get_test_symbol(), data="float32",
                           im_info="float32")
    assert dtypes["conv0_output"] == dtypes["rpn_conv_3x3_p2_output"] == "bfloat16"
    assert dtypes["rpn_cls_prob_p2_output"] == dtypes["proposals_output"] == "float32"


# --- decoding ---------------------------------------------------------------------------------

def test_proposal_count_finds_the_cyclic_padding():
    rows = np.array([[1, 2, 3, 4, 0.9], [5, 6, 7, 8, 0.8], [1, 2, 3, 4, 0.9],
                     [5, 6, 7, 8, 0.8]], np.float32)
    assert proposal_count(rows) == 2
    assert proposal_count(rows[:2]) == 2  # no padding
    assert proposal_count(np.array([[1, 2, 3, 4, 0.9]] * 3, np.float32)) == 1
    assert proposal_count(np.zeros((3, 5), np.float32)) == 0  # no proposal survived
    assert proposal_count(np.zeros((0, 5), np.float32)) == 0
    # the same box with another score is no repeat
    assert proposal_count(np.array([[1, 2, 3, 4, 0.9], [1, 2, 3, 4, 0.5]], np.float32)) == 2


def test_faster_rcnn_keeps_its_own_contract_over_the_rpn_it_extends():
    """FasterRcnn derives from RpnDetector: whatever the RPN-only family says differently must
    be Faster's own again (the graph inputs, losses, evaluation and the decoding of dets)."""
    assert issubclass(FasterRcnn, RpnDetector)
    for name in ("train_data_names", "loss_names", "precision_components", "eval_types",
                 "get_train_symbol", "get_test_symbol", "decode_test_outputs"):
        assert name in vars(FasterRcnn), name
    dets = np.array([[[10, 20, 29, 39, 0.9, 2], [-1, -1, -1, -1, -1, -1]]], np.float32)
    im_info = np.array([[100, 150, 2.0]], np.float32)
    faster = FasterRcnn.__new__(FasterRcnn)  # decoding needs no graph
    (result,) = faster.decode_test_outputs([dets], im_info, [(50, 75)])  # the outputs list
    (base,) = Detector.decode_test_outputs(faster, dets, im_info, [(50, 75)])
    for key in ("boxes", "scores", "classes"):
        np.testing.assert_array_equal(result[key], base[key])
    assert result["classes"].tolist() == [2]


def test_decode_maps_proposals_to_original_pixels_and_drops_padding():
    proposals = np.array([
        [[10, 20, 29, 39, 0.9], [-5, 0, 300, 60, 0.4], [10, 20, 29, 39, 0.9]],  # 1 padding row
        [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],                    # none survived
    ], np.float32)
    im_info = np.array([[100, 150, 2.0], [64, 64, 0.5]], np.float32)
    first, second = RpnDetector.decode_test_outputs(None, [proposals], im_info, [(50, 75),
                                                                                 (128, 128)])
    again = RpnDetector.decode_test_outputs(None, proposals, im_info, [(50, 75), (128, 128)])
    np.testing.assert_array_equal(again[0]["boxes"], first["boxes"])  # the array alone too
    # "+1" boxes: x1 / s, (x2 + 1) / s - 1, clipped to the 75x50 original
    np.testing.assert_allclose(first["boxes"], [[5, 10, 14, 19], [0, 0, 74, 29.5]])
    np.testing.assert_allclose(first["scores"], [0.9, 0.4])
    assert first["classes"].tolist() == [1, 1] and first["classes"].dtype == np.int32
    assert second["boxes"].shape == (0, 4) and second["scores"].shape == (0,)


# --- a tiny model, run for real ---------------------------------------------------------------

def tiny_cfg():
    cfg = RpnConfig(pretrain=None)
    cfg.backbone.depth = 18
    cfg.backbone.width = 32
    cfg.backbone.normalizer = "bn"
    cfg.dataset.class_names = ("a", "b")
    cfg.neck.channels = 32
    cfg.rpn.conv_channels = 32
    cfg.rpn.batch_per_image = 64
    cfg.rpn.test_pre_nms, cfg.rpn.test_post_nms = 100, 300
    cfg.input.max_num_gt = 4
    cfg.runtime.device_ids = (0,)
    cfg.train.iters_at_batch16 = 1000
    cfg.train.lr_steps_at_batch16 = (500,)
    return cfg.freeze()


def tiny_train_step(cfg):
    """(model, module after one forward/backward, batch, im_info) on two 128x128 images: two
    boxes in the first, none in the second."""
    mx.random.seed(0)
    model = RpnDetector(cfg)
    rng = np.random.default_rng(0)
    gt = np.full((2, cfg.input.max_num_gt, 5), -1, np.float32)
    gt[0, :2] = [[10, 10, 60, 70, 1], [50, 40, 120, 100, 2]]
    im_info = np.array([[SIZE, SIZE, 1.0], [100, SIZE, 1.0]], np.float32)
    levels = model.rpn_levels(SIZE, SIZE)
    targets = [assign_anchor_targets(gt[b][gt[b, :, 4] > 0, :4], im_info[b], levels,
                                     cfg.rpn.anchor_scales, cfg.rpn.anchor_ratios, rng=rng,
                                     batch_size=cfg.rpn.batch_per_image) for b in range(2)]
    batch = {"data": rng.standard_normal((2, 3, SIZE, SIZE)).astype(np.float32),
             "rpn_label": np.stack([t["labels"] for t in targets]).astype(np.float32),
             "rpn_target": np.stack([t["targets"] for t in targets]),
             "rpn_weight": np.stack([t["weights"] for t in targets])}
    symbol = model.get_train_symbol()
    module = mx.mod.Module(symbol, data_names=list(model.train_data_names), label_names=None,
                           fixed_param_names=select_params(symbol.list_arguments(),
                                                           model.fixed_param_patterns()))
    module.bind(data_shapes=[(k, batch[k].shape) for k in model.train_data_names])
    module.init_params(model.initializer())
    module.forward(mx.io.DataBatch([mx.nd.array(batch[k]) for k in model.train_data_names]),
                   is_train=True)
    module.backward()
    mx.nd.waitall()
    return model, module, batch, im_info


def test_tiny_model_trains_a_step_and_proposes_inside_the_images():
    cfg = tiny_cfg()
    model, module, batch, im_info = tiny_train_step(cfg)
    losses = [o.asnumpy() for o in module.get_outputs()]
    assert all(v.shape == (1,) and np.isfinite(v).all() for v in losses)
    assert losses[0][0] == pytest.approx(math.log(2), rel=0.1)  # untrained sigmoid
    grads = dict(zip(module._exec_group.param_names, module._exec_group.grad_arrays))
    for name in ("rpn_cls_logit_weight", "rpn_bbox_delta_weight", "fpn_p2_conv_weight",
                 "stage2_unit1_conv1_weight"):
        assert np.abs(grads[name][0].asnumpy()).sum() > 0, name

    arg_params, aux_params = module.get_params()
    tester = mx.mod.Module(model.get_test_symbol(), data_names=list(model.test_data_names),
                           label_names=None)
    tester.bind(data_shapes=[("data", batch["data"].shape), ("im_info", (2, 3))],
                for_training=False)
    tester.set_params(arg_params, aux_params)
    tester.forward(mx.io.DataBatch([mx.nd.array(batch["data"]), mx.nd.array(im_info)]),
                   is_train=False)
    proposals = tester.get_outputs()[0].asnumpy()
    mx.nd.waitall()
    assert proposals.shape == (2, cfg.rpn.test_post_nms, 5) and np.isfinite(proposals).all()
    # the second image is 100 x 128 (input pixels): proposals clipped to it
    assert proposals[1, :, 3].max() <= 99 and proposals[..., :4].min() >= 0
    # the tester hands over the list of the test symbol's outputs
    results = model.decode_test_outputs([proposals], im_info, [(SIZE, SIZE), (50, 64)])
    for result, rows, (height, width) in zip(results, proposals, [(SIZE, SIZE), (50, 64)]):
        count = proposal_count(rows)
        assert 0 < count <= cfg.rpn.test_post_nms and len(result["boxes"]) == count
        assert (np.diff(result["scores"]) <= 0).all()  # by descending score
        assert (result["classes"] == 1).all()
        assert result["boxes"][:, 2].max() <= width - 1 and result["boxes"][:, 3].max() <= (
            height - 1)
        assert len({tuple(b) + (s,) for b, s in zip(rows[:count, :4].tolist(),
                                                    rows[:count, 4].tolist())}) == count


def test_fixbn_without_pretrained_weights_warns_for_the_rpn_too():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_config(ZOO_RPN, ["pretrain=none"])
    assert any("fixbn" in str(w.message) for w in caught)
