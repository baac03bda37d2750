"""The batch layout, written once: the arrays a loader batch holds, with shapes and dtypes.

The loader allocates batches from it (simpledet.data.loader), the detectors bind their graphs
with it (``train_data_shapes`` / ``test_data_shapes``) and the benchmark builds its synthetic
batch from it (simpledet.benchmark.synthetic), so the three cannot disagree.

Every array has the image as axis 0 (Module splits a batch over contexts along it):

- ``data`` (B, 3, Hb, Wb) float32: normalized pixels, the resized image top-left in the bucket.
- ``im_info`` (B, 3) float32: [input height, input width, scale] of the resized image.
- ``gt_boxes`` (B, G, 5) float32: [x1, y1, x2, y2, class] in input pixels, rows of -1 padding.
- ``image_ids`` (B,) int64 and ``valid`` (B,) bool: loader bookkeeping (not graph inputs).
- in training, the arrays of the detector's target assigners (simpledet.data.targets), each
  (B, *shape) as the assigner declares it for the bucket; e.g. the RPN anchor targets
  ``rpn_label`` (B, N) and ``rpn_target`` / ``rpn_weight`` (B, 4N) float32.
"""
import numpy as np

__all__ = ["IMAGE_INPUTS", "batch_layout", "batch_shapes", "graph_inputs"]

# The graph inputs every batch has (the assigners add theirs; image_ids and valid are not inputs).
IMAGE_INPUTS = ("data", "im_info", "gt_boxes")


def batch_layout(batch_size, bucket_h, bucket_w, max_gt, assigners=()):
    """{name: (shape, dtype)} of one batch.

    Args:
        batch_size: images in the batch (B).
        bucket_h, bucket_w: the padded input shape (Hb, Wb).
        max_gt: ground-truth rows per image (G).
        assigners: target assigners (simpledet.data.targets) whose outputs the batch holds.

    Raises:
        ValueError: two assigners (or an assigner and the image arrays) declare one name.
    """
    size, height, width = int(batch_size), int(bucket_h), int(bucket_w)
    layout = {
        "data": ((size, 3, height, width), np.float32),
        "im_info": ((size, 3), np.float32),
        "gt_boxes": ((size, int(max_gt), 5), np.float32),
        "image_ids": ((size,), np.int64),
        "valid": ((size,), np.bool_),
    }
    for assigner in assigners:
        for name, (shape, dtype) in assigner.outputs(height, width).items():
            if name in layout:
                raise ValueError(f"{type(assigner).__name__} declares the batch array {name!r}, "
                                 "which the batch already has")
            layout[name] = ((size, *(int(s) for s in shape)), dtype)
    return layout


def graph_inputs(assigners=()):
    """The batch keys that are graph inputs: the image arrays, then each assigner's outputs."""
    names = list(IMAGE_INPUTS)
    for assigner in assigners:
        names.extend(n for n in assigner.names if n not in names)
    return tuple(names)


def batch_shapes(names, batch_size, bucket_h, bucket_w, max_gt, assigners=()):
    """{name: shape} of the listed graph inputs (for bind / infer_shape), in ``names`` order."""
    layout = batch_layout(batch_size, bucket_h, bucket_w, max_gt, assigners)
    return {name: layout[name][0] for name in names}
