"""Mask R-CNN's wiring on a real-like batch (portrait bucket, two images at different scales,
polygons with a gap between them): the mask branch sees every foreground RoI of each image,
its targets are the matched gt's polygons rasterised in that RoI, background rows are ignored,
the loss trains the mask head; the test graph's masks belong to its detections; decoding pastes
them into the original image as RLE."""
import mxnet as mx
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from simpledet.config.mask_rcnn import MaskRcnnConfig
from simpledet.core.boxes import box_iou
from simpledet.data import anchor_target as AT
from simpledet.detectors import MaskRcnn

BUCKET = (480, 320)
IM_INFO = np.array([[480, 320, 0.75], [427, 320, 0.6667]], np.float32)
NUM_GT = (9, 4)
MAX_GT = 12
POLY_LEN = 40


def tiny_cfg():
    cfg = MaskRcnnConfig()
    cfg.pretrain = None
    cfg.backbone.depth = 18
    cfg.backbone.normalizer = "bn"
    cfg.neck.channels = 8
    cfg.rpn.conv_channels = 8
    cfg.bbox_head.fc_dim = 16
    cfg.mask_head.conv_channels = 8
    cfg.input.short, cfg.input.long = 320, 480
    cfg.input.max_num_gt = MAX_GT
    cfg.mask_target.poly_len = POLY_LEN
    cfg.rpn.train_pre_nms, cfg.rpn.train_post_nms = 300, 100
    cfg.roi_sampler.batch_per_image = 64
    cfg.freeze()
    return cfg


def object_polygons(box):
    """Two polygons per object: a diamond in the left 60 % of the box and a triangle in its
    right third, spanning the box exactly ("+1" box: continuous extent to x2 + 1)."""
    x1, y1, x2, y2 = box
    w, h = x2 + 1 - x1, y2 + 1 - y1
    diamond = [x1, y1 + h / 2, x1 + 0.3 * w, y1, x1 + 0.6 * w, y1 + h / 2, x1 + 0.3 * w, y2 + 1]
    triangle = [x1 + 0.7 * w, y1 + 0.2 * h, x2 + 1, y1 + 0.5 * h, x1 + 0.7 * w, y1 + 0.8 * h]
    return [diamond, triangle]


def real_like_batch(cfg, model, rng):
    from simpledet.core.masks import encode_polygons

    gt_boxes = np.full((2, MAX_GT, 5), -1, np.float32)
    gt_polys = np.empty((2, MAX_GT, POLY_LEN), np.float32)
    polygons = []
    levels = model.rpn_levels(*BUCKET)
    targets = []
    for b, count in enumerate(NUM_GT):
        height, width = IM_INFO[b, :2]
        w = rng.uniform(20, width * 0.5, count)
        h = rng.uniform(20, height * 0.5, count)
        x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
        boxes = np.stack([x, y, x + w - 1, y + h - 1], axis=1).astype(np.float32)
        gt_boxes[b, :count, :4] = boxes
        gt_boxes[b, :count, 4] = rng.integers(1, 81, count)
        image_polys = [object_polygons(box) for box in boxes]
        polygons.append(image_polys)
        gt_polys[b] = encode_polygons(image_polys, MAX_GT, POLY_LEN)
        targets.append(AT.assign_anchor_targets(boxes, IM_INFO[b], levels, cfg.rpn.anchor_scales,
                                                cfg.rpn.anchor_ratios, rng=rng))
    data = rng.standard_normal((2, 3) + BUCKET).astype(np.float32)
    return polygons, {"data": data, "im_info": IM_INFO, "gt_boxes": gt_boxes,
                      "rpn_label": np.stack([t["labels"] for t in targets]),
                      "rpn_target": np.stack([t["targets"] for t in targets]),
                      "rpn_weight": np.stack([t["weights"] for t in targets]),
                      "gt_crowd": np.full((2, cfg.input.max_num_crowd, 4), -1, np.float32),
                      "gt_polys": gt_polys}


INTERNALS = ("rpn_sampled_rois_output", "rpn_sampled_label_output",
             "rpn_sampled_gt_index_output", "mask_target_output", "mask_logit_output",
             "mask_loss_output")


@pytest.fixture(scope="module")
def train_outputs():
    cfg = tiny_cfg()
    model = MaskRcnn(cfg)
    mx.random.seed(0)
    polygons, batch = real_like_batch(cfg, model, np.random.default_rng(0))
    symbol = model.get_train_symbol()
    internals = symbol.get_internals()
    names = set(internals.list_outputs())
    missing = [n for n in INTERNALS if n not in names]
    assert not missing, missing
    group = mx.sym.Group([internals[name] for name in INTERNALS])
    exe = group.simple_bind(mx.cpu(), grad_req="null", **{k: v.shape for k, v in batch.items()})
    init = model.initializer()
    for name, array in exe.arg_dict.items():
        if name in batch:
            array[:] = batch[name]
        else:
            init(mx.init.InitDesc(name, attrs=group.attr_dict().get(name, {})), array)
    for name, array in exe.aux_dict.items():
        array[:] = 1 if name.endswith("_var") else 0
    values = [o.asnumpy() for o in exe.forward(is_train=True)]
    return cfg, polygons, batch, dict(zip(INTERNALS, values))


def test_train_symbol_inputs_and_losses():
    cfg = tiny_cfg()
    model = MaskRcnn(cfg)
    symbol = model.get_train_symbol()
    assert symbol.list_outputs() == [f"{n}_output" for n in model.loss_names]
    assert model.loss_names[-1] == "mask_loss"
    assert set(model.train_data_names) <= set(symbol.list_arguments())
    assert model.train_data_names[-1] == "gt_polys"
    assert [n for a in model.target_assigners() for n in a.names][-1] == "gt_polys"
    shapes = model.train_data_shapes(2, *BUCKET)
    assert shapes["gt_polys"] == (2, MAX_GT, POLY_LEN)
    _, out_shapes, _ = symbol.infer_shape(**shapes)
    assert all(s == (1,) for s in out_shapes)


def test_mask_rows_hold_every_foreground_roi(train_outputs):
    cfg, _, _, out = train_outputs
    per_image, keep = cfg.roi_sampler.batch_per_image, cfg.mask_rois_per_image
    labels = out["rpn_sampled_label_output"].reshape(2, per_image)
    assert keep == round(cfg.roi_sampler.fg_fraction * per_image)
    for b in range(2):
        assert (labels[b, keep:] <= 0).all()  # nothing foreground past the mask rows
        assert (labels[b, :keep] > 0).sum() >= NUM_GT[b]  # the gt boxes themselves at least
    assert out["mask_target_output"].shape == (2 * keep, cfg.mask_size, cfg.mask_size)
    assert out["mask_logit_output"].shape == (2 * keep, cfg.num_classes, cfg.mask_size,
                                              cfg.mask_size)


def test_mask_targets_are_the_matched_gt_polygons_in_the_roi(train_outputs):
    cfg, polygons, batch, out = train_outputs
    per_image, keep, size = cfg.roi_sampler.batch_per_image, cfg.mask_rois_per_image, cfg.mask_size
    rois = out["rpn_sampled_rois_output"].reshape(2, per_image, 5)[:, :keep]
    labels = out["rpn_sampled_label_output"].reshape(2, per_image)[:, :keep]
    gt_index = out["rpn_sampled_gt_index_output"].reshape(2, per_image)[:, :keep]
    targets = out["mask_target_output"].reshape(2, keep, size, size)
    ious = []
    for b in range(2):
        gt = batch["gt_boxes"][b]
        for r in range(keep):
            if labels[b, r] <= 0:
                assert gt_index[b, r] == -1 and (targets[b, r] == -1).all()
                continue
            j = int(gt_index[b, r])
            assert gt[j, 4] == labels[b, r]  # the matched gt has the row's class
            box = rois[b, r, 1:]
            assert box_iou(box[None], gt[j:j + 1, :4])[0, 0] >= cfg.roi_sampler.fg_iou - 1e-6
            x1, y1, x2, y2 = box
            w, h = max(x2 - x1 + 1, 1), max(y2 - y1 + 1, 1)
            framed = [[(v - (x1 if k % 2 == 0 else y1)) * size / (w if k % 2 == 0 else h)
                       for k, v in enumerate(poly)] for poly in polygons[b][j]]
            expected = mask_utils.decode(mask_utils.merge(
                mask_utils.frPyObjects(framed, size, size)))
            got = targets[b, r] > 0.5
            assert set(np.unique(targets[b, r])) <= {0.0, 1.0}
            union = (got | (expected > 0)).sum()
            ious.append((got & (expected > 0)).sum() / union if union else 1.0)
    assert len(ious) >= sum(NUM_GT)
    assert min(ious) >= 0.85, sorted(ious)[:5]
    assert np.mean(ious) >= 0.95


def test_mask_loss_is_finite_and_trains_only_the_mask_branch_params_it_reaches():
    cfg = tiny_cfg()
    model = MaskRcnn(cfg)
    mx.random.seed(1)
    _, batch = real_like_batch(cfg, model, np.random.default_rng(1))
    symbol = model.get_train_symbol()
    loss = symbol.get_internals()["mask_loss_output"]
    exe = loss.simple_bind(mx.cpu(), grad_req="write", **{k: v.shape for k, v in batch.items()
                                                          if k in loss.list_arguments()})
    init = model.initializer()
    for name, array in exe.arg_dict.items():
        if name in batch:
            array[:] = batch[name]
        else:
            init(mx.init.InitDesc(name, attrs=loss.attr_dict().get(name, {})), array)
    for name, array in exe.aux_dict.items():
        array[:] = 1 if name.endswith("_var") else 0
    value = exe.forward(is_train=True)[0].asnumpy()
    exe.backward()
    assert np.isfinite(value).all() and 0.3 < value[0] < 1.5  # ~log 2 at init
    grads = {k: v.asnumpy() for k, v in exe.grad_dict.items() if v is not None}
    assert np.abs(grads["mask_logit_weight"]).sum() > 0
    assert np.abs(grads["mask_conv1_weight"]).sum() > 0
    assert np.abs(grads["fpn_p2_conv_weight"]).sum() > 0  # the masks train the features too
    assert not np.abs(grads["gt_polys"]).any()


def test_test_symbol_masks_belong_to_the_detections():
    cfg = tiny_cfg()
    model = MaskRcnn(cfg)
    symbol = model.get_test_symbol()
    assert len(symbol.list_outputs()) == 2
    _, shapes, _ = symbol.infer_shape(**model.test_data_shapes(2, *BUCKET))
    assert shapes == [(2, cfg.test.max_det, 6),
                      (2, cfg.test.max_det, cfg.mask_size, cfg.mask_size)]
    # The mask RoIs are the detections' boxes with their image index.
    internals = symbol.get_internals()
    rois = internals["mask_det_rois_output"]
    dets = mx.sym.var("dets")
    from simpledet.detectors.mask_rcnn import _detection_rois

    fake = np.random.default_rng(0).uniform(0, 100, (2, 5, 6)).astype(np.float32)
    got = _detection_rois(dets, "t").eval(ctx=mx.cpu(), dets=mx.nd.array(fake))[0].asnumpy()
    expected = np.concatenate([np.repeat([[0.0], [1.0]], 5, axis=0),
                               fake[:, :, :4].reshape(-1, 4)], axis=1)
    np.testing.assert_array_equal(got, expected)
    assert rois is not None


def test_decoding_pastes_each_mask_into_the_original_image():
    cfg = tiny_cfg()
    model = MaskRcnn(cfg)
    dets = np.full((1, 4, 6), -1, np.float32)
    dets[0, 0] = [20, 40, 119, 99, 0.9, 3]  # input pixels, scale 0.5 -> original 40..239
    dets[0, 1] = [0, 0, 59, 29, 0.8, 7]
    masks = np.zeros((1, 4, 28, 28), np.float32)
    masks[0, 0] = 1.0  # the whole box
    masks[0, 1, :, :14] = 0.9  # the left half of the box
    masks[0, 2:] = 1.0  # unused rows: dropped with their detections
    (result,) = model.decode_test_outputs([dets, masks], np.array([[150, 200, 0.5]]),
                                          [(300, 400)])
    assert len(result["masks"]) == 2 and list(result["classes"]) == [3, 7]
    first = mask_utils.decode(result["masks"][0])
    assert first.shape == (300, 400)
    expected = np.zeros((300, 400), np.uint8)
    expected[80:200, 40:240] = 1
    assert (first != expected).sum() <= 2 * (120 + 200)  # at most a pixel ring off
    second = mask_utils.decode(result["masks"][1])
    ys, xs = np.nonzero(second)
    assert ys.min() == 0 and ys.max() <= 60 and xs.min() == 0 and 55 <= xs.max() <= 64
