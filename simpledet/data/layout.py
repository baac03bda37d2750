"""The batch layout, written once: the arrays a loader batch holds, with shapes and dtypes.

The loader allocates batches from it (simpledet.data.loader), the detectors bind their graphs
with it (``train_data_shapes`` / ``test_data_shapes``) and the benchmark builds its synthetic
batch from it (simpledet.benchmark.synthetic), so the three cannot disagree.

Every array has the image as axis 0 (Module splits a batch over contexts along it):

- ``data`` (B, 3, Hb, Wb) float32: normalized pixels, the resized image top-left in the bucket.
- ``im_info`` (B, 3) float32: [input height, input width, scale] of the resized image.
- ``gt_boxes`` (B, G, 5) float32: [x1, y1, x2, y2, class] in input pixels, rows of -1 padding.
- ``image_ids`` (B,) int64 and ``valid`` (B,) bool: loader bookkeeping (not graph inputs).
- with RPN anchor targets (training), for the N anchors of the bucket in (level, a, y, x)
  order: ``rpn_label`` (B, N) float32 (1 fg, 0 bg, -1 ignored), ``rpn_target`` and
  ``rpn_weight`` (B, 4N) float32 (see simpledet.data.anchor_target).
"""
import numpy as np

__all__ = ["GRAPH_INPUTS", "batch_layout", "batch_shapes"]

# The batch keys that are graph inputs (the rest is loader bookkeeping).
GRAPH_INPUTS = ("data", "im_info", "gt_boxes", "rpn_label", "rpn_target", "rpn_weight")


def batch_layout(batch_size, bucket_h, bucket_w, max_gt, num_anchors=None):
    """{name: (shape, dtype)} of one batch.

    Args:
        batch_size: images in the batch (B).
        bucket_h, bucket_w: the padded input shape (Hb, Wb).
        max_gt: ground-truth rows per image (G).
        num_anchors: anchors of the bucket (N) to add the RPN targets, or None.
    """
    size, height, width = int(batch_size), int(bucket_h), int(bucket_w)
    layout = {
        "data": ((size, 3, height, width), np.float32),
        "im_info": ((size, 3), np.float32),
        "gt_boxes": ((size, int(max_gt), 5), np.float32),
        "image_ids": ((size,), np.int64),
        "valid": ((size,), np.bool_),
    }
    if num_anchors is not None:
        num = int(num_anchors)
        layout.update(rpn_label=((size, num), np.float32),
                      rpn_target=((size, 4 * num), np.float32),
                      rpn_weight=((size, 4 * num), np.float32))
    return layout


def batch_shapes(names, batch_size, bucket_h, bucket_w, max_gt, num_anchors=None):
    """{name: shape} of the listed graph inputs (for bind / infer_shape), in ``names`` order."""
    layout = batch_layout(batch_size, bucket_h, bucket_w, max_gt, num_anchors)
    return {name: layout[name][0] for name in names}
