"""Hand-computed cases of the ops on portrait inputs (H > W), where a height/width swap cannot
hide: the shapes data is landscape only, and most op tests use landscape or square maps.

- pyramid_proposal and detection_postprocess clip x to im_info width - 1 and y to height - 1,
  per image of the batch;
- fpn_roi_align reads a portrait map at (y, x) = the roi's rows and columns.
"""
import mxnet as mx
import numpy as np
import pytest

from simpledet.ops import detection_postprocess, fpn_roi_align, pyramid_proposal


def test_pyramid_proposal_clips_x_to_width_and_y_to_height_per_image():
    # One 16x16 anchor per location at stride 8 (scale 2, ratio 1) on an 8x4 (H x W) map; a
    # single high score per image, with deltas growing its anchor to 4x its size (dw = dh =
    # log 4): anchor at (y=7, x=3) is [20, 52, 35, 67] (centre 27.5, 59.5), 64 px wide after:
    # [-4, 28, 59, 91] before clipping.
    cls = np.zeros((2, 1, 8, 4), np.float32)
    cls[:, 0, 7, 3] = 0.9
    box = np.zeros((2, 4, 8, 4), np.float32)
    box[:, 2:, 7, 3] = np.log(4)
    im_info = np.array([[64, 32, 1.0], [48, 30, 0.5]], np.float32)  # portrait, as H x W
    rois, scores = pyramid_proposal([mx.nd.array(cls)], [mx.nd.array(box)],
                                    mx.nd.array(im_info), feature_strides=(8,), scales=(2,),
                                    ratios=(1,), pre_nms_top_n=4, post_nms_top_n=1)
    np.testing.assert_allclose(rois.asnumpy(), [[0, 0, 28, 31, 63], [1, 0, 28, 29, 47]],
                               rtol=0, atol=1e-4)
    np.testing.assert_allclose(scores.asnumpy().ravel(), [0.9, 0.9])


def test_detection_postprocess_clips_x_to_width_and_y_to_height_per_image():
    # Zero deltas: the rois themselves, clipped. Both cross the right and bottom edges.
    rois = np.array([[0, -5, 300, 200, 700], [1, 10, -3, 400, 500]], np.float32)
    cls_prob = np.array([[0.1, 0.9], [0.2, 0.8]], np.float32)
    bbox_pred = np.zeros((2, 8), np.float32)
    im_info = np.array([[480, 320, 0.75], [427, 320, 0.6667]], np.float32)
    dets = detection_postprocess(mx.nd.array(rois), mx.nd.array(cls_prob),
                                 mx.nd.array(bbox_pred), mx.nd.array(im_info),
                                 max_det=2).asnumpy()
    np.testing.assert_allclose(dets[0, 0], [0, 300, 200, 479, 0.9, 1], rtol=1e-6)
    np.testing.assert_allclose(dets[1, 0], [10, 0, 319, 426, 0.8, 1], rtol=1e-6)
    assert (dets[:, 1] == -1).all()


@pytest.mark.parametrize("aligned", [False, True])
def test_fpn_roi_align_reads_rows_and_columns_of_a_portrait_map(aligned):
    # P2 of a 480x320 portrait input: a 120x80 map holding 1000 * y + x. A roi low in the image
    # (rows beyond the map's width) pools the mean of 1000 * y + x over its samples, which is
    # 1000 * (its centre row) + (its centre column) on this linear map.
    height, width, stride = 120, 80, 4
    fmap = (1000 * np.arange(height)[:, None] + np.arange(width)[None, :]).astype(np.float32)
    maps = [mx.nd.array(fmap[None, None])] + [
        mx.nd.zeros((1, 1, height // 2 ** k, width // 2 ** k)) for k in (1, 2, 3)]
    rois = np.array([[0, 8, 400, 39, 439],     # 32 x 40: level P2
                     [0, 200, 12, 231, 43]], np.float32)  # top right, same size
    out = fpn_roi_align(mx.nd.array(rois), maps, feature_strides=(4, 8, 16, 32),
                        pooled_size=1, sampling_ratio=2, aligned=aligned).asnumpy()[:, 0, 0, 0]
    offset = 0.5 if aligned else 0.0
    for roi, value in zip(rois, out):
        x1, y1, x2, y2 = roi[1:] / stride - offset
        assert value == pytest.approx(1000 * (y1 + y2) / 2 + (x1 + x2) / 2, abs=0.05)
