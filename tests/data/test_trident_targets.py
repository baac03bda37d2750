"""Scale-aware targets of TridentNet on hand cases: the range rule (inclusive ends, open top),
the loader's per-branch RPN anchor targets (each branch learns only its objects and ignores
anchors on the others) and the graph's per-branch gt rows and RoI mask."""
import mxnet as mx
import numpy as np
import pytest

from simpledet.data import anchor_target as AT
from simpledet.data.targets import ImageSample, TridentAnchorAssigner, in_valid_range
from simpledet.data.targets.trident import check_valid_ranges
from simpledet.detectors.tridentnet import branch_gt_boxes, branch_range_mask

RANGES = ((0.0, 64.0), (24.0, 128.0), (64.0, -1.0))
BUCKET = (256, 320)
LEVELS = [(16, 16, 20)]
SCALES, RATIOS = (1.0, 2.0, 4.0, 8.0, 16.0), (0.5, 1.0, 2.0)
SMALL = [40, 40, 59, 59]  # 20 x 20 ("+1"): sqrt(area) 20, branch 0 only
MEDIUM = [100, 100, 147, 147]  # 48 x 48: branches 0 and 1
LARGE = [150, 60, 299, 209]  # 150 x 150: branch 2 only


def test_in_valid_range_hand_case():
    boxes = np.array([SMALL, MEDIUM, LARGE, [0, 0, 63, 63], [0, 0, 64, 64]], np.float32)
    assert in_valid_range(boxes, 0, 64).tolist() == [True, True, False, True, False]
    assert in_valid_range(boxes, 24, 128).tolist() == [False, True, False, True, True]
    assert in_valid_range(boxes, 64, -1).tolist() == [False, False, True, True, True]
    assert in_valid_range(np.zeros((0, 4), np.float32), 0, 10).shape == (0,)
    with pytest.raises(ValueError, match=r"valid_ranges\[1\]"):
        check_valid_ranges(((0, 10), (20, 5)))


def assigner(ranges=RANGES, **kwargs):
    return TridentAnchorAssigner(lambda h, w: LEVELS, SCALES, RATIOS, valid_ranges=ranges,
                                 batch_size=10_000, **kwargs)  # no subsampling: all labels


def sample(boxes):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    return ImageSample(boxes=boxes, classes=np.ones(len(boxes), np.int32),
                       crowd_boxes=np.zeros((0, 4), np.float32),
                       im_info=np.array([256, 320, 1.0], np.float32), bucket=BUCKET)


def assign(boxes, ranges=RANGES, seed=0):
    a = assigner(ranges)
    out = {name: np.full(shape, 7.0, dtype) for name, (shape, dtype)
           in a.outputs(*BUCKET).items()}
    a.assign(sample(boxes), np.random.default_rng(seed), out)
    return out


def test_each_branch_learns_only_its_objects():
    boxes = np.array([SMALL, LARGE], np.float32)
    out = assign(boxes)
    n = AT.num_level_anchors(LEVELS, SCALES, RATIOS)
    assert out["rpn_label"].shape == (3, n) and out["rpn_target"].shape == (3, 4 * n)
    anchors = AT.level_anchors(LEVELS, SCALES, RATIOS)
    iou_small = AT.anchor_max_iou(boxes[:1], [256, 320, 1], LEVELS, SCALES, RATIOS)
    iou_large = AT.anchor_max_iou(boxes[1:], [256, 320, 1], LEVELS, SCALES, RATIOS)
    plain, _ = AT.label_anchors(boxes, [256, 320, 1], LEVELS, SCALES, RATIOS)
    for k, (on, off) in enumerate([(iou_small, iou_large), (None, None),
                                   (iou_large, iou_small)]):
        labels = out["rpn_label"][k]
        if on is None:  # branch 1 (24..128): both objects are outside, so nothing positive
            assert not (labels == 1).any()
            assert (labels[(iou_small > 0.3) | (iou_large > 0.3)] == -1).all()
            continue
        positive = labels == 1
        assert positive.any() and (on[positive] > 0).all() and (off[positive] <= 0.3).all()
        assert (labels[off > 0.3] == -1).all()  # ignored, not background
        # The anchors the plain RPN calls positive for this branch's object stay positive.
        mine = (plain == 1) & (on >= off) & (off <= 0.3)
        assert positive[mine].all()
        # Targets of branch k point to its own object.
        weights = out["rpn_weight"][k].reshape(len(SCALES) * len(RATIOS), 4, 16, 20)
        assert weights.sum() == 4 * positive.sum()
        targets = out["rpn_target"][k].reshape(weights.shape).transpose(0, 2, 3, 1)
        first = np.flatnonzero(positive)[0]
        a, yx = divmod(first, 16 * 20)
        goal = AT.encode_boxes(anchors[first][None], boxes[[0 if k == 0 else 1]])[0]
        np.testing.assert_allclose(targets[a, yx // 20, yx % 20], goal, rtol=1e-5)
    # The negatives far from both objects are the same in every branch.
    far = (iou_small == 0) & (iou_large == 0) & (plain == 0)
    assert (out["rpn_label"][:, far] == 0).all()


def test_medium_object_is_shared_by_two_branches_and_unbounded_ranges_change_nothing():
    out = assign([MEDIUM])
    assert (out["rpn_label"][0] == 1).any() and (out["rpn_label"][1] == 1).any()
    assert not (out["rpn_label"][2] == 1).any()
    plain, _ = AT.label_anchors(np.array([MEDIUM, LARGE], np.float32), [256, 320, 1], LEVELS,
                                SCALES, RATIOS)
    unbounded = assign([MEDIUM, LARGE], ranges=((0.0, -1.0),) * 3)
    for k in range(3):
        np.testing.assert_array_equal(unbounded["rpn_label"][k], plain)


def test_no_gt_makes_every_branch_negative_and_overwrites_the_batch_memory():
    out = assign(np.zeros((0, 4), np.float32))
    assert set(np.unique(out["rpn_label"])) <= {0.0, -1.0}
    assert (out["rpn_target"] == 0).all() and (out["rpn_weight"] == 0).all()


def test_sampling_is_per_branch_and_follows_the_seed():
    a = TridentAnchorAssigner(lambda h, w: LEVELS, SCALES, RATIOS, valid_ranges=RANGES,
                              batch_size=32, fg_fraction=0.25)
    outs = []
    for _ in range(2):
        out = {name: np.zeros(shape, dtype) for name, (shape, dtype)
               in a.outputs(*BUCKET).items()}
        a.assign(sample([SMALL, MEDIUM, LARGE]), np.random.default_rng(3), out)
        outs.append(out)
    np.testing.assert_array_equal(outs[0]["rpn_label"], outs[1]["rpn_label"])
    labels = outs[0]["rpn_label"]
    assert ((labels >= 0).sum(axis=1) == 32).all()
    assert ((labels == 1).sum(axis=1) <= 8).all()
    assert not np.array_equal(labels[0] == 0, labels[2] == 0)  # drawn separately


def test_graph_gives_each_branch_its_gt_rows():
    gt = np.full((2, 4, 5), -1, np.float32)
    gt[0, :3] = [SMALL + [1], MEDIUM + [2], LARGE + [3]]
    gt[1, :1] = [[0, 0, 63, 63, 4]]  # exactly 64: in every branch (ends included)
    sym = branch_gt_boxes(mx.sym.var("gt"), RANGES)
    out = sym.eval(ctx=mx.cpu(), gt=mx.nd.array(gt))[0].asnumpy()
    assert out.shape == (6, 4, 5)
    classes = out[..., 4].reshape(2, 3, 4)
    assert classes[0].tolist() == [[1, 2, -1, -1], [-1, 2, -1, -1], [-1, -1, 3, -1]]
    assert classes[1].tolist() == [[4, -1, -1, -1]] * 3
    np.testing.assert_array_equal(out[..., :4].reshape(2, 3, 4, 4)[:, 2], gt[..., :4])


def test_graph_roi_mask_by_branch():
    rois = np.zeros((1, 3, 2, 4), np.float32)
    rois[0, :, 0] = SMALL
    rois[0, :, 1] = LARGE
    mask = branch_range_mask(mx.sym.var("r"), RANGES, "t").eval(
        ctx=mx.cpu(), r=mx.nd.array(rois))[0].asnumpy()
    assert mask.tolist() == [[[1, 0], [0, 0], [0, 1]]]


def test_invalid_iou_decides_which_near_anchors_a_branch_ignores():
    boxes = np.array([SMALL, LARGE], np.float32)
    iou_large = AT.anchor_max_iou(boxes[1:], [256, 320, 1], LEVELS, SCALES, RATIOS)
    plain, _ = AT.label_anchors(boxes, [256, 320, 1], LEVELS, SCALES, RATIOS)
    out = {name: np.zeros(shape, dtype) for name, (shape, dtype)
           in assigner(invalid_iou=0.1).outputs(*BUCKET).items()}
    assigner(invalid_iou=0.1).assign(sample(boxes), np.random.default_rng(0), out)
    near = (iou_large > 0.1) & (iou_large <= 0.3) & (plain == 0)
    assert near.any()
    assert (out["rpn_label"][0][near] == -1).all()  # branch 0: near the large object
    assert (out["rpn_label"][2][near] == 0).all()  # branch 2: its own object's negatives


def test_no_branch_regresses_towards_an_object_outside_its_range():
    boxes = np.array([SMALL, LARGE], np.float32)
    iou_small = AT.anchor_max_iou(boxes[:1], [256, 320, 1], LEVELS, SCALES, RATIOS)
    a = assigner(invalid_iou=1.0)  # the IoU rule off: the matched-gt rule alone
    out = {name: np.zeros(shape, dtype) for name, (shape, dtype) in a.outputs(*BUCKET).items()}
    a.assign(sample(boxes), np.random.default_rng(0), out)
    positive = out["rpn_label"][0] == 1
    assert positive.any() and (iou_small[positive] > 0).all()
