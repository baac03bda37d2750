"""TridentNet's wiring on a tiny model: the parameters are exactly the C4 Faster R-CNN's, the
train graph stacks K branch-images per image (K times the proposals and RoIs), the box head
trains only on RoIs in their branch's range, training steps give finite, falling losses, the
test graph merges the branches per image and TridentFast runs the middle branch alone, and the
config refuses what TridentNet cannot do."""
import warnings
from pathlib import Path

import mxnet as mx
import numpy as np
import pytest

from simpledet.config import ConfigError, TridentNetConfig, load_config
from simpledet.data.targets import ImageSample, in_valid_range
from simpledet.detectors.tridentnet import TridentNet
from simpledet.engine.build import build_detector

REPO = Path(__file__).resolve().parents[2]
TRIDENT_CONFIGS = sorted(p for p in (REPO / "config").rglob("trident*.py")
                         if "_base" not in p.parts)
BUCKET = (128, 160)
IM_INFO = np.array([[128, 160, 1.0], [110, 150, 0.9]], np.float32)
RANGES = ((0.0, 40.0), (16.0, 80.0), (40.0, -1.0))
LOSSES = ["rpn_cls_loss_output", "rpn_reg_loss_output", "bbox_cls_loss_output",
          "bbox_reg_loss_output"]


def tiny_cfg(**trident):
    cfg = TridentNetConfig()
    cfg.pretrain = None
    cfg.neck.type = "none"
    cfg.bbox_head.type = "c5"
    cfg.bbox_head.class_agnostic = True
    cfg.bbox_head.c5_stride = 2
    cfg.backbone.depth = 18
    cfg.backbone.width = 8
    cfg.backbone.variant = "v1b"
    cfg.backbone.normalizer = "bn"
    cfg.backbone.frozen_stages = 0
    cfg.dataset.class_names = ("a", "b", "c")
    cfg.rpn.anchor_scales = (1.0, 2.0, 4.0)
    cfg.rpn.conv_channels = 16
    cfg.rpn.batch_per_image = 64
    cfg.rpn.train_pre_nms, cfg.rpn.train_post_nms = 200, 40
    cfg.rpn.test_pre_nms, cfg.rpn.test_post_nms = 100, 30
    cfg.roi_sampler.batch_per_image = 16
    cfg.roi_sampler.fg_fraction = 0.5
    cfg.input.short, cfg.input.long = 128, 160
    cfg.input.max_num_gt = 4
    cfg.test.max_det = 20
    cfg.test.score_thresh = 0.0
    cfg.trident.valid_ranges = RANGES
    cfg.trident.update(trident)
    return cfg.freeze()


def tiny_batch(model, seed=0):
    """Two images: a small, a medium and a large box in the first, one large in the second."""
    rng = np.random.default_rng(seed)
    gt = np.full((2, 4, 5), -1, np.float32)
    gt[0, :3] = [[8, 10, 27, 29, 1], [50, 40, 89, 79, 2], [60, 20, 150, 120, 3]]
    gt[1, :1] = [[30, 20, 100, 100, 2]]
    (assigner,) = [a for a in model.target_assigners() if "rpn_label" in a.names]
    out = {name: np.zeros((2, *shape), dtype) for name, (shape, dtype)
           in assigner.outputs(*BUCKET).items()}
    for b in range(2):
        boxes = gt[b][gt[b, :, 4] > 0]
        sample = ImageSample(boxes[:, :4], boxes[:, 4].astype(np.int32),
                             np.zeros((0, 4), np.float32), IM_INFO[b], BUCKET)
        assigner.assign(sample, rng, {k: v[b] for k, v in out.items()})
    data = rng.standard_normal((2, 3) + BUCKET).astype(np.float32)
    for b in range(2):  # something to learn: brighter boxes
        for x1, y1, x2, y2, c in gt[b][gt[b, :, 4] > 0]:
            data[b, int(c) - 1, int(y1):int(y2) + 1, int(x1):int(x2) + 1] += 2
    return {"data": data, "im_info": IM_INFO, "gt_boxes": gt, **out,
            "gt_crowd": np.full((2, model.cfg.input.max_num_crowd, 4), -1, np.float32)}


def bind(symbol, batch, model, grad=False):
    shapes = {k: v.shape for k, v in batch.items() if k in symbol.list_arguments()}
    inputs = set(shapes)
    exe = symbol.simple_bind(mx.cpu(), grad_req={n: "write" if grad and n not in inputs
                                                 else "null" for n in symbol.list_arguments()},
                             **shapes)
    init = model.initializer()
    mx.random.seed(0)
    for name, array in exe.arg_dict.items():
        if name in batch:
            array[:] = batch[name]
        else:
            init(mx.init.InitDesc(name, attrs=symbol.attr_dict().get(name, {})), array)
    for name, array in exe.aux_dict.items():
        array[:] = 1 if name.endswith("_var") else 0
    return exe


@pytest.mark.parametrize("path", TRIDENT_CONFIGS,
                         ids=lambda p: str(p.relative_to(REPO / "config")))
def test_every_trident_config_builds_and_infers_shapes(path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = load_config(path)
    model = build_detector(cfg)
    assert isinstance(model, TridentNet)
    batch = cfg.train.images_per_device
    train, test = model.get_train_symbol(), model.get_test_symbol()
    for bucket in ((cfg.input.short, cfg.input.long), (cfg.input.long, cfg.input.short)):
        bucket = tuple(-(-side // 32) * 32 for side in bucket)
        shapes = model.train_data_shapes(batch, *bucket)
        (_, h, w), = model.rpn_levels(*bucket)
        assert shapes["rpn_label"] == (batch, 3, cfg.rpn.num_anchors * h * w)
        _, out_shapes, _ = train.infer_shape(**shapes)
        assert out_shapes == [(1,)] * 4
        _, out_shapes, _ = test.infer_shape(**model.test_data_shapes(1, *bucket))
        assert out_shapes == [(1, cfg.test.max_det, 6)]
    train_inputs = set(train.list_arguments()) | set(train.list_auxiliary_states())
    assert set(test.list_arguments()) - set(model.test_data_names) <= train_inputs
    assert set(test.list_auxiliary_states()) <= train_inputs


def test_parameters_are_the_c4_faster_rcnn_ones():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trident = build_detector(load_config(REPO / "config" / "tridentnet_r50v2c4_c5_1x.py"))
        faster = build_detector(load_config(REPO / "config" /
                                            "faster_r50v2c4_c5_256roi_1x.py"))
    names = trident.get_train_symbol().list_arguments()
    assert len(names) == len(set(names))
    assert names == faster.get_train_symbol().list_arguments()
    test = trident.get_test_symbol().list_arguments()
    fast = TridentNet(_fast(trident.cfg))
    assert test == fast.get_test_symbol().list_arguments() == faster.get_test_symbol(
    ).list_arguments()


def _fast(cfg):
    fast = cfg.copy()
    fast.trident.test_branch = 1
    return fast.freeze()


@pytest.fixture(scope="module")
def train_run():
    model = TridentNet(tiny_cfg())
    batch = tiny_batch(model)
    symbol = model.get_train_symbol()
    internals = symbol.get_internals()
    names = ["rpn_sampled_rois_output", "trident_label_output", "rpn_sampled_label_output",
             "trident_bbox_weight_output", "rpn_proposal_blockgrad_output"]
    group = mx.sym.Group([symbol] + [internals[n] for n in names])
    exe = bind(group, batch, model, grad=True)
    mx.random.seed(0)
    values = [o.asnumpy() for o in exe.forward(is_train=True)]
    return model, batch, dict(zip(symbol.list_outputs() + names, values))


def test_branches_are_stacked_per_image(train_run):
    model, batch, out = train_run
    k, s = 3, model.cfg.roi_sampler.batch_per_image
    assert batch["rpn_label"].shape[:2] == (2, 3)
    assert out["rpn_proposal_blockgrad_output"].shape == (2 * k * model.cfg.rpn.train_post_nms,
                                                           5)
    rois = out["rpn_sampled_rois_output"]
    assert rois.shape == (2 * k * s, 5)
    np.testing.assert_array_equal(rois[:, 0], np.repeat(np.arange(2 * k), s))


def test_box_head_trains_only_on_rois_in_their_branch_range(train_run):
    model, batch, out = train_run
    k, s = 3, model.cfg.roi_sampler.batch_per_image
    rois = out["rpn_sampled_rois_output"].reshape(2, k, s, 5)
    sampled = out["rpn_sampled_label_output"].reshape(2, k, s)
    label = out["trident_label_output"].reshape(2, k, s)
    weight = out["trident_bbox_weight_output"].reshape(2, k, s, 4)
    for b in range(2):
        gt = batch["gt_boxes"][b]
        for branch, (lo, hi) in enumerate(RANGES):
            inside = in_valid_range(rois[b, branch, :, 1:], lo, hi)
            np.testing.assert_array_equal(label[b, branch][inside], sampled[b, branch][inside])
            assert (label[b, branch][~inside] == -1).all()
            assert (weight[b, branch][~inside] == 0).all()
            # Foreground only from the branch's own gt rows.
            mine = set(gt[in_valid_range(gt[:, :4], lo, hi) & (gt[:, 4] > 0), 4].tolist())
            assert set(sampled[b, branch][sampled[b, branch] > 0].tolist()) <= mine
    # Both kinds of rows exist, so the checks above test something.
    assert (label >= 0).any() and (label == -1).any() and (sampled > 0).any()


def test_training_steps_give_finite_falling_losses():
    model = TridentNet(tiny_cfg())
    batch = tiny_batch(model)
    symbol = model.get_train_symbol()
    mod = mx.mod.Module(symbol, data_names=[n for n in model.train_data_names],
                        label_names=None, context=mx.cpu())
    mod.bind([(n, batch[n].shape) for n in model.train_data_names])
    mx.random.seed(0)
    mod.init_params(model.initializer())
    mod.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.02,
                                                          "momentum": 0.9})
    data = mx.io.DataBatch([mx.nd.array(batch[n]) for n in model.train_data_names])
    totals = []
    for _ in range(12):
        mod.forward(data, is_train=True)
        mod.backward()
        mod.update()
        losses = [o.asnumpy()[0] for o in mod.get_outputs()]
        assert np.isfinite(losses).all()
        totals.append(sum(losses))
    mx.nd.waitall()
    assert np.mean(totals[-3:]) < np.mean(totals[:3])


@pytest.mark.parametrize("test_branch", [None, 1])
def test_test_graph_merges_branches_or_runs_the_middle_one(test_branch):
    model = TridentNet(tiny_cfg(test_branch=test_branch))
    batch = tiny_batch(model)
    symbol = model.get_test_symbol()
    internals = symbol.get_internals()
    extra = ["rpn_proposal_blockgrad_output"]
    if test_branch is None:
        extra += ["trident_merged_rois_output", "trident_test_roi_keep_output",
                  "bbox_cls_prob_output", "trident_cls_prob_output"]
    exe = bind(mx.sym.Group([symbol] + [internals[n] for n in extra]),
               {k: batch[k] for k in ("data", "im_info")}, model)
    values = dict(zip(["dets"] + extra, (o.asnumpy() for o in exe.forward(is_train=False))))
    assert values["dets"].shape == (2, 20, 6)
    post = model.cfg.rpn.test_post_nms
    proposals = values["rpn_proposal_blockgrad_output"]
    if test_branch == 1:
        assert proposals.shape == (2 * post, 5)  # Faster R-CNN's test path
        assert not any(n.startswith("trident_") for n in internals.list_outputs())
        return
    assert proposals.shape == (2 * 3 * post, 5)
    merged = values["trident_merged_rois_output"]
    np.testing.assert_array_equal(merged[:, 0], np.repeat([0, 1], 3 * post))
    np.testing.assert_array_equal(merged[:, 1:], proposals[:, 1:])
    keep = values["trident_test_roi_keep_output"][:, 0].reshape(2, 3, post)
    sizes = proposals[:, 1:].reshape(2, 3, post, 4)
    for branch, (lo, hi) in enumerate(RANGES):
        want = np.stack([in_valid_range(sizes[b, branch], lo, hi) for b in range(2)])
        np.testing.assert_array_equal(keep[:, branch].astype(bool), want)
    prob = values["trident_cls_prob_output"]
    np.testing.assert_array_equal(prob[keep.reshape(-1) == 0], 0)
    np.testing.assert_array_equal(prob[keep.reshape(-1) == 1],
                                  values["bbox_cls_prob_output"][keep.reshape(-1) == 1])


def test_config_refuses_what_tridentnet_cannot_do():
    cfg = tiny_cfg()
    assert cfg.trident.num_branches == 3
    for key, value, match in (
            ("neck.type", "fpn", "C4 layout only"),
            ("trident.valid_ranges", ((0.0, 40.0), (16.0, 80.0)), "one per branch"),
            ("trident.valid_ranges", ((0.0, 40.0), (50.0, 20.0), (40.0, -1.0)),
             "trident.valid_ranges"),
            ("trident.test_branch", 3, "trident.test_branch"),
            ("trident.trident_units", 2, "trident.trident_units")):
        broken = cfg.copy()
        with pytest.raises(ConfigError, match=match):  # when set, or when frozen
            broken.set(key, value)
            broken.freeze()
