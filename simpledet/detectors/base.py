"""The detector contract: what the engine (trainer, tester, benchmark, pretrained loading) calls.

A detector family is one subclass of :class:`Detector`, built from its config class
(``cfg.detector_class(cfg)``, see ``simpledet.engine.build.build_detector``); the engine uses
nothing else of it. Layouts (B images per device, (Hb, Wb) the padded bucket):

Train inputs (``train_data_names``, each with the image as axis 0 so Module can split a batch
over contexts; shapes and dtypes in ``simpledet.data.layout``): the batch arrays the train graph
reads, data first (MXNet cannot bind an input the graph does not use, so a family lists only
those), out of
    data (B, 3, Hb, Wb) float32 normalized pixels; im_info (B, 3) [height, width, scale] of
    the resized image; gt_boxes (B, G, 5) [x1, y1, x2, y2, class] "+1" boxes in input pixels,
    padding rows -1; then the arrays of the family's loader targets,
    :meth:`Detector.target_assigners` (Faster R-CNN: one RpnAnchorAssigner, rpn_label (B, N),
    rpn_target and rpn_weight (B, 4N) for the N anchors of :meth:`Detector.rpn_levels`, then,
    with roi_sampler.crowd_iof, a CrowdRegionAssigner, gt_crowd (B, M, 4) crowd regions padded
    with -1 rows; the RPN-only detector: the RpnAnchorAssigner alone, and its graph reads
    neither im_info nor gt_boxes; RetinaNet: one RetinaAnchorAssigner, and its graph reads
    neither im_info nor gt_boxes).
Train outputs: one ``MakeLoss`` per name of ``loss_names``, each a (1,) value normalized over
    this device's samples (the optimizer averages the devices' gradients).
Test inputs (``test_data_names``): data, im_info.
Test outputs: the test symbol's outputs (a list of numpy arrays, in list_outputs order) are
    decoded per image by :meth:`Detector.decode_test_outputs` into result dicts in
    original-image pixels; the base decodes the first output ``dets`` (B, D, 6)
    [x1, y1, x2, y2, score, class] in network-input pixels, rows with class < 1 unused
    (Mask R-CNN adds ``masks`` (B, D, M, M) and its dicts a "masks" list of RLE dicts; the
    RPN-only detector outputs ``proposals`` (B, P, 5) [x1, y1, x2, y2, score] instead, its
    results all of class 1).
Evaluation: ``eval_types`` names the COCO evaluations of those results, entries of
    ``simpledet.engine.evaluation.EVAL_TYPES``: 'bbox' (and 'segm' for masks) score detections
    per category by AP; 'proposal' scores boxes class-agnostically by recall (AR@100/300/1000).
"""
import numpy as np

from simpledet.data.layout import batch_shapes
from simpledet.data.transforms import unscale_boxes

__all__ = ["Detector", "decode_detections", "default_initializer", "detections_to_original"]


def default_initializer():
    """The initializer of parameters without pretrained values, for every detector and the
    trainer (one definition).

    Variables that carry their own ``init`` attribute (heads: N(0, 0.01), box regression
    N(0, 0.001); FPN and fc layers: Xavier uniform) keep it; every other weight (backbone convs
    trained from scratch) gets He (MSRA) Gaussian init with the fan-out variance 2 / (k*k*C_out)
    (torchvision's ResNet init, SimpleDet's ``Xavier(gaussian, out, 2)``); biases and BN/GN beta
    0, gamma 1, moving means 0, moving variances 1 (MXNet's defaults by name suffix).
    """
    import mxnet as mx

    return mx.init.Xavier(rnd_type="gaussian", factor_type="out", magnitude=2)


def detections_to_original(dets, im_info, image_sizes):
    """Maps one batch of detections to original-image pixels.

    Args:
        dets: (B, D, 6) [x1, y1, x2, y2, score, class] in network-input pixels; rows whose class
            is < 1 (the -1 padding) are dropped.
        im_info: (B, 3) [input height, input width, scale].
        image_sizes: B (height, width) of the original images.

    Returns:
        B dicts {"boxes": (N, 4) float32, "scores": (N,) float32, "classes": (N,) int32}; a box
        maps back by the inverse of the loader's resize (simpledet.data.transforms.unscale_boxes)
        and is clipped to the image.
    """
    dets = np.asarray(dets, dtype=np.float32)
    out = []
    for image_dets, info, (height, width) in zip(dets, np.asarray(im_info), image_sizes):
        keep = image_dets[:, 5] >= 1
        kept = image_dets[keep]
        boxes = unscale_boxes(kept[:, :4], info[2], height, width)
        out.append({"boxes": boxes, "scores": kept[:, 4].astype(np.float32),
                    "classes": np.rint(kept[:, 5]).astype(np.int32)})
    return out


def decode_detections(outputs, im_info, image_sizes):
    """:func:`detections_to_original` of the first test output (``outputs`` a list of arrays,
    or the dets array itself)."""
    dets = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    return detections_to_original(dets, im_info, image_sizes)


class Detector:
    """Base of every detector family; subclasses build the symbols from their config.

    Class attributes:
        train_data_names / test_data_names: graph inputs, named as the loader's batch keys; an
            instance may extend them when its config adds an input (Faster R-CNN's gt_crowd):
            read them from the detector, not its class.
        label_names: Module label names (empty: labels enter as data).
        loss_names: the train symbol's MakeLoss names (``{name}_output`` in list_outputs).
        precision_components: the components the detector marks for mixed precision (the
            family config's ``precision_components`` is this tuple).
        eval_types: the COCO evaluations of the test results ('bbox'; 'segm' for masks;
            'proposal' for proposals: class-agnostic AR), the first naming the results json.

    Args:
        cfg: the family's frozen config (a ``simpledet.config.common.DetectorConfig``).
    """

    train_data_names = ("data", "im_info", "gt_boxes")
    test_data_names = ("data", "im_info")
    label_names = ()
    loss_names = ()
    precision_components = ()
    eval_types = ("bbox",)

    def __init__(self, cfg):
        self.cfg = cfg

    # --- graphs -------------------------------------------------------------------------------

    def get_train_symbol(self):
        """mx.sym.Group of one MakeLoss per ``loss_names`` entry, inputs ``train_data_names``."""
        raise NotImplementedError

    def get_test_symbol(self):
        """The inference symbol over ``test_data_names`` (outputs: see decode_test_outputs)."""
        raise NotImplementedError

    # --- what the loader and bind need --------------------------------------------------------

    def rpn_levels(self, bucket_h, bucket_w):
        """[(stride, feat_h, feat_w)] of the RPN levels the loader's anchor targets are made
        for, for a padded (bucket_h, bucket_w) input; [] when the family has no RPN (RetinaNet's
        levels: ``RetinaNet.anchor_levels``)."""
        return []

    def target_assigners(self, buckets=None):
        """The loader's training targets this family needs (simpledet.data.targets), in the
        order they fill an image (they draw from its random stream in that order).

        Args:
            buckets: the padded (Hb, Wb) shapes the loader will make; the assigners are then
                picklable (e.g. feature sizes computed once per bucket) for worker processes.
                None: any bucket, for shapes only (need not pickle).

        Returns:
            A list of assigners (the base: none); their output names are the graph inputs
            after data, im_info, gt_boxes.
        """
        return []

    def train_data_shapes(self, batch_size, bucket_h, bucket_w):
        """{input name: shape} of one device's training batch (for bind / infer_shape)."""
        return batch_shapes(self.train_data_names, batch_size, bucket_h, bucket_w,
                            self.cfg.input.max_num_gt,
                            self.target_assigners([(bucket_h, bucket_w)]))

    def test_data_shapes(self, batch_size, bucket_h, bucket_w):
        """{input name: shape} of one device's test batch."""
        return batch_shapes(self.test_data_names, batch_size, bucket_h, bucket_w,
                            self.cfg.input.max_num_gt)

    # --- results ------------------------------------------------------------------------------

    def decode_test_outputs(self, outputs, im_info, image_sizes):
        """Per-image result dicts (original pixels) of one test batch.

        Args:
            outputs: the test symbol's outputs, a list of numpy arrays (the base reads the
                first, dets (B, D, 6)).
            im_info: (B, 3) of the batch.
            image_sizes: B (height, width) of the original images.

        Returns:
            B dicts {"boxes", "scores", "classes"} (see :func:`detections_to_original`).
        """
        return decode_detections(outputs, im_info, image_sizes)

    # --- parameters ---------------------------------------------------------------------------

    def fixed_param_patterns(self):
        """Anchored regexes of the parameters not to train (``^stage1_``, never substrings)."""
        return []

    def backbone_param_patterns(self):
        """Anchored regexes of the parameters a pretrained file must hold when
        ``pretrain_strict`` (see simpledet.engine.pretrained); the rest is initialized."""
        return []

    def initializer(self):
        """Initializer of parameters without pretrained values (:func:`default_initializer`)."""
        return default_initializer()
