"""Crowd regions as ignore regions: of the RPN anchor targets (rule 5 of
simpledet.data.anchor_target: hand cases, empty inputs, the assigner, the loader's resize and
flip of the crowd boxes) and of the RoI sampler (the CrowdRegionAssigner's gt_crowd rows:
resize, flip, padding, truncation counted and warned about); the photos fixture's crowd region
end to end on both sides."""
import functools

import numpy as np
import pytest

from simpledet.core.boxes import box_iou
from simpledet.data import anchor_target as AT
from simpledet.data import loader as loader_module
from simpledet.data import transforms
from simpledet.data.loader import DetectionLoader
from simpledet.data.targets import CrowdRegionAssigner, ImageSample, RpnAnchorAssigner

# One level, stride 16, one 32x32 anchor per location on a 4x8 grid of a 64x128 image:
# the anchor at (y, x) is [16x - 8, 16y - 8, 16x + 23, 16y + 23] (centre 16x + 7.5).
LEVELS = [(16, 4, 8)]
KW = dict(levels=LEVELS, scales=(2.0,), ratios=(1.0,), allowed_border=-1)
IM_INFO = (64, 128, 1.0)


def anchor(y, x):
    return y * 8 + x


def test_hand_case_inside_crowd_is_ignored_outside_stays_negative():
    anchors = AT.level_anchors(LEVELS, (2.0,), (1.0,))
    np.testing.assert_array_equal(anchors[anchor(1, 5)], [72, 8, 103, 39])
    gt = np.array([[0, 0, 31, 31]], np.float32)  # best anchors: (0, 0), (0, 1), (1, 0), (1, 1)
    crowd = np.array([[64, 0, 127, 63]], np.float32)  # the right half of the image
    plain, _ = AT.label_anchors(gt, IM_INFO, **KW)
    labels, _ = AT.label_anchors(gt, IM_INFO, crowd_boxes=crowd, **KW)
    assert plain[anchor(0, 0)] == 1 and plain[anchor(1, 5)] == 0 and plain[anchor(3, 1)] == 0
    assert labels[anchor(1, 5)] == -1  # inside the crowd box: IoF 1
    assert labels[anchor(3, 1)] == 0  # far from it
    assert labels[anchor(2, 4)] == -1  # [56, 24, 87, 55]: 24 of its 32 columns, IoF 0.75
    iof = AT.in_crowd(anchors, crowd, 0.5)
    # Exactly half is not more than half: the anchor at x = 4 starts at 56, so its
    # intersection with [72, ...] is 16 of 32 columns.
    half = np.array([[72, 0, 127, 63]], np.float32)
    assert not AT.in_crowd(anchors[[anchor(1, 4)]], half, 0.5)[0]
    labels_half, _ = AT.label_anchors(gt, IM_INFO, crowd_boxes=half, **KW)
    assert labels_half[anchor(1, 4)] == 0 and labels_half[anchor(1, 5)] == -1
    # Only negatives change: everything else is as without crowd boxes.
    changed = labels != plain
    assert (plain[changed] == 0).all() and (labels[changed] == -1).all()
    np.testing.assert_array_equal(changed, (plain == 0) & iof)


def test_positive_anchors_inside_a_crowd_region_stay_positive():
    gt = np.array([[72, 8, 103, 39]], np.float32)  # exactly the anchor at (1, 5)
    crowd = np.array([[64, 0, 127, 63]], np.float32)
    labels, matched = AT.label_anchors(gt, IM_INFO, crowd_boxes=crowd, **KW)
    assert labels[anchor(1, 5)] == 1 and matched[anchor(1, 5)] == 0


def test_in_crowd_matches_a_loop_reference():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (300, 2))
    anchors = np.concatenate([xy, xy + rng.uniform(1, 40, (300, 2))], axis=1).astype(np.float32)
    crowd = np.array([[10, 10, 50, 40], [60, 0, 99, 99]], np.float32)
    want = []
    for a in anchors:
        area = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
        best = 0.0
        for c in crowd:
            iw = max(min(a[2], c[2]) - max(a[0], c[0]) + 1, 0)
            ih = max(min(a[3], c[3]) - max(a[1], c[1]) + 1, 0)
            best = max(best, iw * ih / area)
        want.append(best > 0.5)
    np.testing.assert_array_equal(AT.in_crowd(anchors, crowd), want)
    assert 0 < sum(want) < len(want)
    assert not AT.in_crowd(anchors, np.zeros((0, 4), np.float32)).any()
    assert AT.in_crowd(np.zeros((0, 4), np.float32), crowd).shape == (0,)


@pytest.mark.parametrize("crowd", [None, np.zeros((0, 4), np.float32), []])
def test_no_crowd_box_changes_nothing(crowd):
    gt = np.array([[3, 5, 40, 30], [60, 10, 120, 60]], np.float32)
    levels = AT.feature_levels(64, 128, (8, 16))
    args = (gt, IM_INFO, levels, (2.0,), (0.5, 1.0, 2.0))
    plain = AT.assign_anchor_targets(*args, batch_size=32, rng=np.random.default_rng(1))
    out = AT.assign_anchor_targets(*args, batch_size=32, crowd_boxes=crowd,
                                   rng=np.random.default_rng(1))
    for key in plain:
        np.testing.assert_array_equal(out[key], plain[key])


def test_zero_gt_with_a_crowd_box():
    crowd = np.array([[64, 0, 127, 63]], np.float32)
    labels, matched = AT.label_anchors(np.zeros((0, 5), np.float32), IM_INFO,
                                       crowd_boxes=crowd, **KW)
    anchors = AT.level_anchors(LEVELS, (2.0,), (1.0,))
    inside = AT.in_crowd(anchors, crowd)
    assert inside.any() and (~inside).any()
    np.testing.assert_array_equal(labels, np.where(inside, -1, 0))
    assert (matched == -1).all()
    out = AT.assign_anchor_targets(np.zeros((0, 4)), IM_INFO, LEVELS, (2.0,), (1.0,),
                                   allowed_border=-1, batch_size=8, crowd_boxes=crowd,
                                   rng=np.random.default_rng(0))
    assert (out["labels"][inside] == -1).all() and (out["labels"] == 0).sum() == 8
    assert not out["weights"].any() and not out["targets"].any()


def test_zero_gt_and_zero_crowd():
    labels, _ = AT.label_anchors(np.zeros((0, 4)), IM_INFO, crowd_boxes=np.zeros((0, 4)), **KW)
    assert (labels == 0).all()


def rpn_assigner(**kw):
    return RpnAnchorAssigner(functools.partial(AT.feature_levels, strides=(16,)), (2.0,), (1.0,),
                             allowed_border=-1, batch_size=10_000, **kw)


def test_the_assigner_passes_the_crowd_boxes_and_can_turn_the_rule_off():
    crowd = np.array([[64, 0, 127, 63]], np.float32)
    sample = ImageSample(boxes=np.array([[0, 0, 31, 31]], np.float32),
                         classes=np.ones(1, np.int32), crowd_boxes=crowd,
                         im_info=np.float32(IM_INFO), bucket=(64, 128))
    outputs = {}
    for name, assigner in (("on", rpn_assigner()), ("off", rpn_assigner(crowd_iof=None))):
        out = {k: np.full(shape, 7, dtype) for k, (shape, dtype)
               in assigner.outputs(64, 128).items()}
        assigner.assign(sample, np.random.default_rng(0), out)
        outputs[name] = out
    inside = AT.in_crowd(AT.level_anchors(LEVELS, (2.0,), (1.0,)), crowd)
    assert (outputs["on"]["rpn_label"][inside] == -1).all()
    assert (outputs["off"]["rpn_label"][inside] == 0).all()
    for key in ("rpn_target", "rpn_weight"):
        np.testing.assert_array_equal(outputs["on"][key], outputs["off"][key])


@pytest.mark.parametrize("flip", [False, True], ids=["unflipped", "flipped"])
def test_the_loader_resizes_and_flips_crowd_boxes_with_the_image(tmp_path, monkeypatch, flip):
    import cv2

    path = str(tmp_path / "img.png")
    cv2.imwrite(path, np.zeros((32, 64, 3), np.uint8))
    record = {"image_id": 1, "file_name": path, "height": 32, "width": 64,
              "boxes": np.array([[2, 2, 15, 15]], np.float32), "classes": np.ones(1, np.int32),
              "crowd_boxes": np.array([[40, 0, 63, 31]], np.float32),  # the right part
              "segmentations": [[[2, 2, 15, 2, 15, 15]]]}
    monkeypatch.setattr(loader_module, "random_flip",
                        functools.partial(transforms.random_flip, prob=1.0 if flip else 0.0))
    loader = DetectionLoader([record], batch_size=1, short_sides=(64,), long_side=128,
                             mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), flip=True, max_gt=4,
                             assigners=[rpn_assigner()], num_workers=0, shuffle=False)
    compact = loader._pipeline.records[0]
    np.testing.assert_array_equal(compact["crowd_boxes"], record["crowd_boxes"])
    assert compact["segmentations"] == record["segmentations"]
    (batch,) = list(loader)
    crowd = np.array([[80, 0, 127, 63]], np.float32)  # x2 scale: [80, 127]
    if flip:
        crowd = np.array([[0, 0, 47, 63]], np.float32)
    inside = AT.in_crowd(AT.level_anchors(LEVELS, (2.0,), (1.0,)), crowd)
    labels = batch["rpn_label"][0]
    assert inside.any() and (~inside).any() and (labels[inside] == -1).all()
    # Outside it the labels are those without crowd boxes (the sample keeps every anchor).
    plain, _ = AT.label_anchors(batch["gt_boxes"][0, :1, :4], batch["im_info"][0], **KW)
    np.testing.assert_array_equal(labels[~inside], plain[~inside])


def test_records_keep_crowd_boxes_and_segmentations_and_check_them(tmp_path):
    base = {"image_id": 1, "file_name": "x.png", "height": 8, "width": 8,
            "boxes": np.zeros((2, 4), np.float32), "classes": np.ones(2, np.int32)}
    kwargs = dict(batch_size=1, short_sides=(8,), long_side=8, mean=(0, 0, 0), std=(1, 1, 1),
                  num_workers=0)
    compact = DetectionLoader([base], **kwargs)._pipeline.records[0]
    assert compact["crowd_boxes"].shape == (0, 4) and compact["segmentations"] == []
    with pytest.raises(ValueError, match="2 boxes but 1 segmentations"):
        DetectionLoader([dict(base, segmentations=[[[0, 0, 1, 1, 1, 0]]])], **kwargs)
    with pytest.raises(ValueError, match="record 0"):
        DetectionLoader([dict(base, crowd_boxes=[[1, 2, 3]])], **kwargs)


# --- the RoI sampler's crowd rows: CrowdRegionAssigner --------------------------------------

def crowd_sample(crowd, im_info=(60, 90, 1.5)):
    return ImageSample(boxes=np.zeros((0, 4), np.float32), classes=np.zeros(0, np.int32),
                       crowd_boxes=np.asarray(crowd, np.float32).reshape(-1, 4),
                       im_info=np.float32(im_info), bucket=(64, 96))


def assign_crowd(assigner, sample):
    out = {"gt_crowd": np.full((assigner.max_crowd, 4), 7, np.float32)}  # stale batch memory
    reported = assigner.assign(sample, np.random.default_rng(0), out)
    return out["gt_crowd"], reported


def test_crowd_rows_are_the_regions_then_padding():
    assigner = CrowdRegionAssigner(4)
    assert assigner.names == ("gt_crowd",)
    assert assigner.outputs(64, 96) == {"gt_crowd": ((4, 4), np.float32)}
    crowd = [[3, 4, 30, 40], [50, 10, 80, 50]]
    rows, reported = assign_crowd(assigner, crowd_sample(crowd))
    np.testing.assert_array_equal(rows, crowd + [[-1] * 4] * 2)
    assert reported is None
    rows, reported = assign_crowd(assigner, crowd_sample(np.zeros((0, 4))))  # zero crowd
    assert (rows == -1).all() and reported is None
    rows, _ = assign_crowd(CrowdRegionAssigner(2), crowd_sample(crowd))  # exactly full
    np.testing.assert_array_equal(rows, crowd)


def test_crowd_rows_beyond_max_crowd_keep_the_largest_and_are_counted():
    # Areas ("+1"): 100, 400, 25, 400, 900. Three rows keep the 900 and both 400 (the tie
    # resolved by record order is irrelevant here), in record order; two are reported dropped.
    crowd = np.array([[0, 0, 9, 9], [10, 10, 29, 29], [40, 40, 44, 44], [50, 0, 69, 19],
                      [0, 30, 29, 59]], np.float32)
    rows, reported = assign_crowd(CrowdRegionAssigner(3), crowd_sample(crowd))
    np.testing.assert_array_equal(rows, crowd[[1, 3, 4]])
    assert reported == {"truncated_crowd": 2}
    # Ties at the cut keep the earlier record row.
    rows, reported = assign_crowd(CrowdRegionAssigner(1), crowd_sample(crowd[[3, 1]]))
    np.testing.assert_array_equal(rows, crowd[[3]])
    assert reported == {"truncated_crowd": 1}
    assert "max_num_crowd" in CrowdRegionAssigner.counters["truncated_crowd"]


def test_crowd_assigner_config_pickle_and_arguments():
    import pickle

    from simpledet.config import FasterRcnnConfig

    cfg = FasterRcnnConfig()
    cfg.input.max_num_crowd = 5
    assigner = pickle.loads(pickle.dumps(CrowdRegionAssigner.from_config(cfg.input)))
    assert assigner.max_crowd == 5 and assigner.outputs(8, 8)["gt_crowd"][0] == (5, 4)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="max_crowd"):
            CrowdRegionAssigner(bad)


def crowd_record(path, crowd, height=40, width=60):
    return {"image_id": 1, "file_name": path, "height": height, "width": width,
            "boxes": np.array([[2, 2, 15, 15]], np.float32), "classes": np.ones(1, np.int32),
            "crowd_boxes": np.asarray(crowd, np.float32)}


@pytest.mark.parametrize("flip", [False, True], ids=["unflipped", "flipped"])
def test_the_loader_fills_gt_crowd_resized_and_flipped_like_gt_boxes(tmp_path, monkeypatch,
                                                                     flip):
    import cv2

    path = str(tmp_path / "img.png")
    cv2.imwrite(path, np.zeros((40, 60, 3), np.uint8))
    record = crowd_record(path, [[30, 0, 59, 19], [0, 25, 9, 39]])
    monkeypatch.setattr(loader_module, "random_flip",
                        functools.partial(transforms.random_flip, prob=1.0 if flip else 0.0))
    loader = DetectionLoader([record], batch_size=1, short_sides=(60,), long_side=120,
                             mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), flip=True, max_gt=4,
                             assigners=[CrowdRegionAssigner(3)], num_workers=0, shuffle=False)
    (batch,) = list(loader)
    im_info = batch["im_info"][0]
    assert im_info[2] == pytest.approx(1.5)  # a non-unit scale: 40x60 -> 60x90
    want = transforms.scale_boxes(record["crowd_boxes"], im_info)
    gt = transforms.scale_boxes(record["boxes"], im_info)
    if flip:
        want = transforms.flip_boxes(want, im_info[1])
        gt = transforms.flip_boxes(gt, im_info[1])
    np.testing.assert_array_equal(batch["gt_boxes"][0, :1, :4], gt)  # flipped like the boxes
    np.testing.assert_array_equal(batch["gt_crowd"][0, :2], want)
    assert (batch["gt_crowd"][0, 2] == -1).all()
    expected = [[45, 0, 89, 29], [0, 37.5, 14, 59]]  # [x1 * s, y1 * s, (x2 + 1) * s - 1, ...]
    if flip:
        expected = [[0, 0, 44, 29], [75, 37.5, 89, 59]]
    np.testing.assert_allclose(batch["gt_crowd"][0, :2], expected)
    assert not loader.target_counts


@pytest.mark.parametrize("workers", [0, 1])
def test_the_loader_counts_dropped_crowd_regions_and_warns_once(tmp_path, caplog, workers):
    import cv2

    path = str(tmp_path / "img.png")
    cv2.imwrite(path, np.zeros((40, 60, 3), np.uint8))
    record = crowd_record(path, [[0, 0, 9, 9], [20, 0, 49, 29], [0, 20, 4, 24]])
    with DetectionLoader([record], batch_size=2, short_sides=(40,), long_side=60,
                         mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), flip=False, max_gt=4,
                         assigners=[CrowdRegionAssigner(1)], num_workers=workers,
                         shuffle=False) as loader:
        with caplog.at_level("WARNING", logger="simpledet.data.loader"):
            for _ in range(2):  # two epochs of one batch of 2 slots: 4 images, 2 dropped each
                (batch,) = list(loader)
                np.testing.assert_array_equal(batch["gt_crowd"][:, 0], [[20, 0, 49, 29]] * 2)
    assert loader.target_counts == {"truncated_crowd": 8}
    warnings = [r.getMessage() for r in caplog.records if "truncated_crowd" in r.getMessage()]
    assert len(warnings) == 1 and "input.max_num_crowd" in warnings[0], warnings


# --- the photos fixture: coins.png has one crowd region (three coins) --------------------------

@pytest.fixture(scope="module")
def photos_coins(tmp_path_factory):
    from simpledet.config import load_config
    from simpledet.data.coco import CocoDataset
    from simpledet.data.photos import ensure_photos_dataset
    from simpledet.detectors import FasterRcnn

    paths = ensure_photos_dataset(tmp_path_factory.mktemp("photos") / "ds")
    records = CocoDataset(*paths.train, for_training=True).records
    (coins,) = [r for r in records if len(r["crowd_boxes"])]
    assert r"coins" in coins["file_name"] and len(coins["crowd_boxes"]) == 1
    cfg = load_config("config/photos/faster_fpn.py")
    return cfg, FasterRcnn(cfg), coins


@pytest.mark.parametrize("flip", [False, True], ids=["unflipped", "flipped"])
def test_photos_crowd_region_is_ignored_in_the_loader_batch(photos_coins, monkeypatch, flip):
    from simpledet.engine.build import build_train_loader

    cfg, detector, coins = photos_coins
    monkeypatch.setattr(loader_module, "random_flip",
                        functools.partial(transforms.random_flip, prob=1.0 if flip else 0.0))
    with build_train_loader(cfg, [coins], detector, num_workers=0) as loader:
        batch = next(iter(loader))
    assigner, crowd_assigner = loader._pipeline.assigners  # roi_sampler.crowd_iof: gt_crowd too
    assert isinstance(assigner, RpnAnchorAssigner)
    im_info = batch["im_info"][0]
    crowd = transforms.scale_boxes(coins["crowd_boxes"], im_info)
    gt = transforms.scale_boxes(coins["boxes"], im_info)
    if flip:
        crowd = transforms.flip_boxes(crowd, im_info[1])
        gt = transforms.flip_boxes(gt, im_info[1])
    np.testing.assert_array_equal(batch["gt_boxes"][0, :len(gt), :4], gt)
    levels = assigner.levels(*batch["data"].shape[2:])
    anchors = AT.level_anchors(levels, assigner.scales, assigner.ratios)
    inside = AT.in_crowd(anchors, crowd)
    labels = batch["rpn_label"][0]
    assert inside.sum() > 50
    assert not (labels[inside] == 0).any()  # no negative inside the crowd region
    assert (labels[~inside] == 0).sum() > 0
    # Without the rule those anchors would be negatives (the coins of the region have no
    # boxes of their own): the rule is what ignores them.
    kw = dict(pos_thresh=assigner.pos_thresh, neg_thresh=assigner.neg_thresh,
              allowed_border=assigner.allowed_border, min_pos_iou=assigner.min_pos_iou)
    plain, _ = AT.label_anchors(gt, im_info, levels, assigner.scales, assigner.ratios, **kw)
    ruled, _ = AT.label_anchors(gt, im_info, levels, assigner.scales, assigner.ratios,
                                crowd_boxes=crowd, **kw)
    assert (plain[inside] == 0).sum() > 50
    np.testing.assert_array_equal(ruled, np.where(inside & (plain == 0), -1, plain))


def test_photos_crowd_region_is_ignored_by_the_roi_sampler_while_training(photos_coins,
                                                                          monkeypatch):
    """The RoI side: the loader's gt_crowd holds coins.png's crowd region, and through two
    training steps of the photos config (SGD updates, finite losses) no background RoI is
    sampled on it although proposals that would be background lie there."""
    import mxnet as mx

    from simpledet.engine.build import build_train_loader

    cfg, detector, coins = photos_coins
    assert cfg.roi_sampler.crowd_iof == 0.7 and "gt_crowd" in detector.train_data_names
    monkeypatch.setattr(loader_module, "random_flip",
                        functools.partial(transforms.random_flip, prob=0.0))
    with build_train_loader(cfg, [coins], detector, num_workers=0) as loader:
        batch = next(iter(loader))
    images = len(batch["data"])  # every slot is coins.png (the batch wraps around)
    im_info = batch["im_info"][0]
    crowd = transforms.scale_boxes(coins["crowd_boxes"], im_info)
    np.testing.assert_array_equal(batch["gt_crowd"][:, :1], np.tile(crowd, (images, 1, 1)))
    assert (batch["gt_crowd"][:, 1:] == -1).all()
    gt = transforms.scale_boxes(coins["boxes"], im_info)

    symbol = detector.get_train_symbol()
    internals = symbol.get_internals()
    group = mx.sym.Group([symbol] + [internals[f"rpn_{n}_output"] for n in (
        "proposal_blockgrad", "sampled_rois", "sampled_label")])
    names = list(detector.train_data_names)
    mx.random.seed(0)
    module = mx.mod.Module(group, data_names=names, label_names=None, context=mx.cpu())
    module.bind(data_shapes=[(k, batch[k].shape) for k in names])
    module.init_params(detector.initializer())
    module.init_optimizer(optimizer="sgd", optimizer_params={"learning_rate": 0.01,
                                                             "momentum": 0.9})
    data = mx.io.DataBatch([mx.nd.array(batch[k]) for k in names])
    per_image = cfg.roi_sampler.batch_per_image
    would_be_bg_in_region = 0
    for _ in range(2):
        module.forward_backward(data)
        module.update()
        outputs = [o.asnumpy() for o in module.get_outputs()]
        losses = outputs[:len(detector.loss_names)]
        assert all(v.shape == (1,) and np.isfinite(v).all() for v in losses), losses
        proposals, rois, labels = outputs[len(detector.loss_names):]
        proposals = proposals.reshape(images, -1, 5)[:, :, 1:]
        for b in range(images):
            sampled = rois[b * per_image:(b + 1) * per_image, 1:]
            kind = labels[b * per_image:(b + 1) * per_image]
            assert (kind == 0).sum() > 0 and (kind > 0).sum() > 0
            assert not AT.in_crowd(sampled[kind == 0], crowd, 0.7).any()
            max_iou = box_iou(proposals[b], gt).max(axis=1)
            in_region = AT.in_crowd(proposals[b], crowd, 0.7)
            would_be_bg_in_region += int((in_region & (max_iou < 0.5)).sum())
    assert would_be_bg_in_region >= 20
