"""The peer: GluonCV's closest model of the config's family, trained and run the way its own
scripts do.

The family comes from the config's detector class (``type(cfg).detector_class``, see
:func:`peer_family`), the model from the family and the neck:

- Faster R-CNN: ``faster_rcnn_fpn_resnet50_v1b_coco`` for FPN configs,
  ``faster_rcnn_resnet50_v1b_coco`` for the C4 layout. Training follows
  scripts/detection/faster_rcnn/train_faster_rcnn.py (GluonCV 0.10):
  ``FasterRCNNDefaultTrainTransform`` makes the RPN targets with the net's anchor generator,
  ``FasterRCNNTrainBatchify`` batches them, the net (hybridized with static alloc/shape) returns
  its RCNN targets, the four losses (sigmoid BCE, Huber, softmax CE, Huber) are normalized as
  there, then backward and ``gluon.Trainer.step``.
- Mask R-CNN: ``mask_rcnn_fpn_resnet50_v1b_coco``. Training follows
  scripts/instance/mask_rcnn/train_mask_rcnn.py (in the installed package: the Mask R-CNN
  estimator, gluoncv/auto/estimators/mask_rcnn): ``MaskRCNNDefaultTrainTransform`` turns the
  same polygons into full-image masks (pycocotools) and makes the RPN targets,
  ``MaskRCNNTrainBatchify`` batches them, and GluonCV's own ``ForwardBackwardTask``
  (gluoncv.model_zoo.rcnn.mask_rcnn.data_parallel) runs the net with gt, pools the mask
  targets of the positive RoIs from the full-image masks with the net's ``mask_target``,
  normalizes the RPN, RCNN and mask losses as the script does (the mask loss: sigmoid BCE
  weighted to the gt class's channel, times its element count over the weights' sum) and
  backpropagates; then ``gluon.Trainer.step``.

Both: random weights (``pretrained=False, pretrained_base=False``); its own architecture
(anchors, RPN width, RoI size, heads), with our proposal and RoI counts, class count and image
size (``model_options``). Inference: ``net(data)`` outside autograd, one image per call
(GluonCV's test graph is built for batch 1), graph only, as ours. For Mask R-CNN the
post-processing its validation does per image after the graph (clip the boxes, to NumPy, the
score filter, ``gluoncv.data.transforms.mask.fill`` to paste the masks into the image, and the
RLE encoding of ``COCOInstanceMetric.update``) is timed separately on the same fixed detections
our side decodes (synthetic.make_detections).

What the Mask R-CNN peer cannot match (its architecture, kept as GluonCV has it):

- RPN head width 1024 (ours 256); box head on 14x14 RoIAlign average-pooled to 7x7 (ours 7x7
  RoIAlign); in training its mask branch reuses those 14x14 features of the box branch, taken
  at its positive RoIs, where ours pools the foreground-quota RoIs (the same count,
  round(fg_fraction * RoIs per image)) a second time, 14x14;
- mask targets: GluonCV rasterizes each gt's polygons into a full-image mask in its data
  transform (not timed) and RoIAligns those masks in the step; ours rasterizes the polygons
  inside each RoI in the graph (the MaskTarget op), inside the timed step;
- mask predictor channels: its foreground classes (K - 1), ours K;
- test: it runs the mask head on the ``rcnn_max_dets`` best of its NMS output over all classes
  (set to our ``test.max_det``), ours on the ``test.max_det`` rows left by the per-class NMS
  and score threshold (unused rows included); both therefore predict ``test.max_det`` masks
  per image;
- its Mask R-CNN train transform flips at random (p = 0.5, no option), so its fixed batch may
  be the mirror image (the same cost); numpy's global stream is seeded with ``cfg.seed`` for it.
"""
import contextlib
import importlib

import mxnet as mx
import numpy as np

from simpledet.benchmark import synthetic
from simpledet.benchmark.measure import (
    TIMING_LR,
    MemoryProbe,
    median,
    peak_rss_mb,
    progress,
    time_calls,
)

FASTER, MASK = "faster_rcnn", "mask_rcnn"
# family -> {neck type: GluonCV model zoo name}
MODELS = {FASTER: {"fpn": "faster_rcnn_fpn_resnet50_v1b_coco",
                   "none": "faster_rcnn_resnet50_v1b_coco"},
          MASK: {"fpn": "mask_rcnn_fpn_resnet50_v1b_coco"}}
# family -> (module, function) the zoo functions call with the counts (see _zoo_keywords)
ZOO_BUILDERS = {FASTER: ("gluoncv.model_zoo.rcnn.faster_rcnn.predefined_models",
                         "get_faster_rcnn"),
                MASK: ("gluoncv.model_zoo.rcnn.mask_rcnn.predefined_models", "get_mask_rcnn")}
# The zoo models' anchors: (RPN strides, anchors per location).
ANCHOR_LAYOUTS = {"fpn": ((4, 8, 16, 32, 64), 3), "none": ((16,), 15)}
# rho of the RPN and RCNN box losses (HuberLoss) in GluonCV's Mask R-CNN training
# (rpn_smoothl1_rho / rcnn_smoothl1_rho of its estimator's defaults; it does not change the cost).
MASK_SMOOTHL1_RHO = 0.001
# Detections its Mask R-CNN validation keeps (det_id >= 0 and det_score >= this).
MASK_SCORE_THRESH = 0.001


def peer_family(cfg):
    """FASTER or MASK: the family of the config's detector class (a Mask R-CNN is also a
    Faster R-CNN, so the most derived family is checked first).

    Raises:
        SettingsError: the config's detector has no GluonCV peer here.
    """
    from simpledet.benchmark.settings import SettingsError
    from simpledet.detectors.faster_rcnn import FasterRcnn
    from simpledet.detectors.mask_rcnn import MaskRcnn

    detector_class = getattr(type(cfg), "detector_class", None)
    for family, base in ((MASK, MaskRcnn), (FASTER, FasterRcnn)):
        if isinstance(detector_class, type) and issubclass(detector_class, base):
            return family
    name = getattr(detector_class, "__name__", detector_class)
    raise SettingsError(f"--peer gluoncv: no GluonCV peer for the detector {name} "
                        f"(peers exist for {', '.join(sorted(MODELS))})")


def model_name(cfg):
    """The GluonCV model zoo name closest to the config's family and layout.

    Raises:
        SettingsError: no peer for the family, or for its neck layout.
    """
    from simpledet.benchmark.settings import SettingsError

    family = peer_family(cfg)
    try:
        return MODELS[family][cfg.neck.type]
    except KeyError:
        raise SettingsError(f"--peer gluoncv: no GluonCV {family} model with neck "
                            f"{cfg.neck.type!r}") from None


def anchor_count(cfg, height, width):
    """A lower bound of the peer's anchors on an height x width image."""
    strides, per_location = ANCHOR_LAYOUTS[cfg.neck.type]
    return per_location * sum((height // s) * (width // s) for s in strides)


def model_options(cfg, height, width, batch):
    """Keyword values of GluonCV's ``get_faster_rcnn`` (``get_mask_rcnn`` for Mask R-CNN) that
    follow our config.

    GluonCV's multi-level RPN takes ``pre_nms`` for all levels together and splits it evenly;
    ours is per level, hence the multiplication by the number of RPN levels. Its RPN cannot
    return more proposals than anchors (ours pads), so tiny images cap ``post_nms``. Mask
    R-CNN adds ``rcnn_max_dets``, the detections its test graph predicts masks for: our
    ``test.max_det`` (GluonCV's default is 1000).
    """
    levels = len(cfg.rpn_feature_strides)
    anchors = anchor_count(cfg, height, width)
    extra = {"rcnn_max_dets": cfg.test.max_det} if peer_family(cfg) == MASK else {}
    return {**extra, "rpn_train_pre_nms": cfg.rpn.train_pre_nms * levels,
            "rpn_train_post_nms": min(cfg.rpn.train_post_nms, anchors),
            "rpn_test_pre_nms": cfg.rpn.test_pre_nms * levels,
            "rpn_test_post_nms": min(cfg.rpn.test_post_nms, anchors),
            "num_sample": cfg.roi_sampler.batch_per_image,
            "pos_ratio": cfg.roi_sampler.fg_fraction,
            "max_num_gt": cfg.input.max_num_gt,
            "short": min(height, width), "max_size": max(height, width),
            "per_device_batch_size": batch,
            "classes": list(cfg.dataset.class_names)}


@contextlib.contextmanager
def _zoo_keywords(values, family=FASTER):
    """While active, GluonCV's predefined models of ``family`` build with ``values``.

    The zoo functions pass the proposal/RoI counts to ``get_faster_rcnn`` (``get_mask_rcnn``)
    explicitly, so the same names given to ``get_model`` collide ("got multiple values for
    keyword argument"); replacing them at that call keeps the zoo's architecture and changes
    only these values.
    """
    module_name, function_name = ZOO_BUILDERS[family]
    predefined_models = importlib.import_module(module_name)
    original = getattr(predefined_models, function_name)

    def build(**kwargs):
        return original(**{**kwargs, **values})

    setattr(predefined_models, function_name, build)
    try:
        yield
    finally:
        setattr(predefined_models, function_name, original)


def build_net(cfg, height, width, batch, context):
    """The initialized, hybridized peer network on ``context``."""
    import gluoncv

    with _zoo_keywords(model_options(cfg, height, width, batch), peer_family(cfg)):
        net = gluoncv.model_zoo.get_model(model_name(cfg), pretrained=False,
                                          pretrained_base=False)
    net.initialize(ctx=context)
    net.target_generator.collect_params().reset_ctx(context)  # created on the CPU
    net.hybridize(static_alloc=True, static_shape=True)
    return net


def training_batch(net, cfg, sample, context):
    """(data, label, rpn_cls_targets, rpn_box_targets, rpn_box_masks) of the synthetic images,
    made by GluonCV's train transform and batchify (its RPN target generator)."""
    from gluoncv.data.batchify import FasterRCNNTrainBatchify
    from gluoncv.data.transforms.presets.rcnn import FasterRCNNDefaultTrainTransform

    transform = FasterRCNNDefaultTrainTransform(
        net.short, net.max_size, net, num_sample=cfg.rpn.batch_per_image,
        pos_iou_thresh=cfg.rpn.pos_iou, neg_iou_thresh=cfg.rpn.neg_iou,
        pos_ratio=cfg.rpn.fg_fraction, flip_p=0.0, ashape=net.ashape,
        multi_stage=cfg.neck.type == "fpn")
    samples = []
    for image, boxes, classes in zip(sample.images, sample.boxes, sample.classes):
        label = np.concatenate([boxes, (classes - 1)[:, None]], axis=1)  # GluonCV ids from 0
        samples.append(transform(mx.nd.array(image, dtype="uint8"), label))
    batch = FasterRCNNTrainBatchify(net, num_shards=1)(samples)
    # With one shard the image and label come as arrays, the targets as 1-tuples of arrays.
    return [(part[0] if isinstance(part, (list, tuple)) else part).as_in_context(context)
            for part in batch]


def mask_training_batch(net, cfg, sample, context):
    """(data, label, gt_masks, rpn_cls_targets, rpn_box_targets, rpn_box_masks) of the
    synthetic images and their polygons, made by GluonCV's Mask R-CNN train transform (full-image
    masks from the polygons, its RPN target generator) and batchify."""
    from gluoncv.data.batchify import MaskRCNNTrainBatchify
    from gluoncv.data.transforms.presets.rcnn import MaskRCNNDefaultTrainTransform

    transform = MaskRCNNDefaultTrainTransform(
        net.short, net.max_size, net, num_sample=cfg.rpn.batch_per_image,
        pos_iou_thresh=cfg.rpn.pos_iou, neg_iou_thresh=cfg.rpn.neg_iou,
        pos_ratio=cfg.rpn.fg_fraction, ashape=net.ashape, multi_stage=True)
    samples = []
    state = np.random.get_state()
    np.random.seed(cfg.seed)  # its random flip draws from numpy's global stream
    try:
        for image, boxes, classes, polygons in zip(sample.images, sample.boxes, sample.classes,
                                                   sample.polygons):
            label = np.concatenate([boxes, (classes - 1)[:, None]], axis=1)  # ids from 0
            segm = [[np.asarray(p, np.float64).reshape(-1, 2) for p in object_polygons]
                    for object_polygons in polygons]
            samples.append(transform(mx.nd.array(image, dtype="uint8"), label, segm))
    finally:
        np.random.set_state(state)
    batch = MaskRCNNTrainBatchify(net, num_shards=1)(samples)
    # With one shard the targets come as 1-tuples of arrays (the rest as arrays).
    return [(part[0] if isinstance(part, (list, tuple)) else part).as_in_context(context)
            for part in batch]


class MaskPeerTrainStep:
    """One call = one GluonCV Mask R-CNN training iteration on the fixed batch: its own
    ForwardBackwardTask (forward with gt, losses, mask targets, backward), then the update."""

    def __init__(self, net, batch, trainer):
        from gluoncv.model_zoo.rcnn.mask_rcnn.data_parallel import ForwardBackwardTask
        from mxnet import gluon

        self.batch, self.trainer = batch, trainer
        self.task = ForwardBackwardTask(
            net, trainer, gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False),
            gluon.loss.HuberLoss(rho=MASK_SMOOTHL1_RHO), gluon.loss.SoftmaxCrossEntropyLoss(),
            gluon.loss.HuberLoss(rho=MASK_SMOOTHL1_RHO),
            gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False), amp_enabled=False)

    def __call__(self):
        self.task.forward_backward(self.batch)
        self.trainer.step(self.batch[0].shape[0])


class PeerTrainStep:
    """One call = one GluonCV training iteration on the fixed batch."""

    def __init__(self, net, batch, trainer):
        from mxnet import gluon

        self.net, self.batch, self.trainer = net, batch, trainer
        self.rpn_cls_loss = gluon.loss.SigmoidBinaryCrossEntropyLoss(from_sigmoid=False)
        self.rpn_box_loss = gluon.loss.HuberLoss(rho=1.0 / 9.0)
        self.rcnn_cls_loss = gluon.loss.SoftmaxCrossEntropyLoss()
        self.rcnn_box_loss = gluon.loss.HuberLoss()

    def losses(self):
        """The total loss of the batch, as GluonCV's ForwardBackwardTask normalizes it."""
        data, label, rpn_cls_targets, rpn_box_targets, rpn_box_masks = self.batch
        gt_label, gt_box = label[:, :, 4:5], label[:, :, :4]
        (cls_pred, box_pred, _, _, _, rpn_score, rpn_box, _, cls_targets, box_targets,
         box_masks, _) = self.net(data, gt_box, gt_label)
        rpn_score = rpn_score.squeeze(axis=-1)
        num_rpn = (rpn_cls_targets >= 0).sum()
        rpn_loss = (self.rpn_cls_loss(rpn_score, rpn_cls_targets, rpn_cls_targets >= 0)
                    * rpn_cls_targets.size / num_rpn
                    + self.rpn_box_loss(rpn_box, rpn_box_targets, rpn_box_masks)
                    * rpn_box.size / num_rpn)
        num_rcnn = (cls_targets >= 0).sum()
        rcnn_loss = (self.rcnn_cls_loss(cls_pred, cls_targets, cls_targets.expand_dims(-1) >= 0)
                     * cls_targets.size / num_rcnn
                     + self.rcnn_box_loss(box_pred, box_targets, box_masks)
                     * box_pred.size / num_rcnn)
        return rpn_loss.sum() + rcnn_loss.sum()

    def __call__(self):
        from mxnet import autograd

        with autograd.record():
            total = self.losses()
        total.backward()
        self.trainer.step(self.batch[0].shape[0])


def build_trainer(net, cfg):
    """gluon.Trainer over the parameters GluonCV trains (its train_patterns), with our SGD
    settings at lr TIMING_LR; the others get no gradient, as in its train script."""
    from mxnet import gluon

    net.collect_params().setattr("grad_req", "null")
    params = net.collect_train_params()
    params.setattr("grad_req", "write")
    options = {"learning_rate": TIMING_LR, "wd": cfg.train.weight_decay,
               "momentum": cfg.train.momentum}
    if cfg.train.clip_gradient is not None:
        options["clip_gradient"] = cfg.train.clip_gradient
    return gluon.Trainer(params, "sgd", options)


def measure_training(net, cfg, sample, context, settings):
    """Median GluonCV training step on the synthetic batch, and the peak memory."""
    progress(f"peer: {model_name(cfg)} training targets and first call "
             f"({sample.height}x{sample.width})")
    if peer_family(cfg) == MASK:
        step = MaskPeerTrainStep(net, mask_training_batch(net, cfg, sample, context),
                                 build_trainer(net, cfg))
    else:
        step = PeerTrainStep(net, training_batch(net, cfg, sample, context),
                             build_trainer(net, cfg))
    memory = MemoryProbe(context)
    durations = time_calls(step, warmup=settings.warmup, iters=settings.iters,
                           label="peer train", sync=mx.nd.waitall, after_call=memory.sample)
    seconds = median(durations)
    return {"train_s_per_iter": seconds, "train_img_s": len(sample.images) / seconds,
            "train_times_s": durations, "peak_mem_mb": memory.peak_mb(),
            "peak_mem_kind": memory.kind, "peak_rss_mb": peak_rss_mb()}


def inference_images(cfg, sample, context):
    """Each image normalized as GluonCV's val transform does: [(1, 3, H, W) NDArray]."""
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the v1b backbone's
    images = []
    for image in sample.images:
        tensor = mx.nd.image.to_tensor(mx.nd.array(image, dtype="uint8"))
        images.append(mx.nd.image.normalize(tensor, mean=mean, std=std).expand_dims(0)
                      .as_in_context(context))
    return images


def measure_inference(net, cfg, sample, context, settings):
    """Latency at batch 1; the batch's throughput is one call per image (GluonCV's test graph
    takes one image), so it is 1 / latency whatever the batch."""
    net.hybridize(static_alloc=True, static_shape=True)  # rebuild the graph in predict mode
    images = inference_images(cfg, sample, context)
    durations = time_calls(lambda: net(images[0]), warmup=settings.warmup,
                           iters=settings.iters, label="peer infer batch 1",
                           sync=mx.nd.waitall)
    latency = median(durations)
    return {"infer_s_per_img": latency, "infer_img_s": 1.0 / latency, "infer_batch": 1}


def validation_decode(clipper, image, outputs, im_info):
    """What GluonCV's Mask R-CNN validation does per image after ``net(image)``: clip the boxes
    to the image, to NumPy, keep ids >= 0 with scores >= 0.001, undo the scale, paste the masks
    into the image (``gluoncv.data.transforms.mask.fill``), then per detection what
    ``COCOInstanceMetric.update`` does: the xywh box and the mask's COCO RLE (its
    ``_encode_mask``). Returns the result dicts."""
    from gluoncv.data.transforms import mask as tmask
    from pycocotools import mask as cocomask

    ids, scores, bboxes, masks = outputs
    det_bbox = clipper(bboxes, image)[0].asnumpy()
    det_id, det_score, det_mask = ids[0].asnumpy(), scores[0].asnumpy(), masks[0].asnumpy()
    im_height, im_width, im_scale = im_info[0].asnumpy()
    valid = np.where((det_id >= 0) & (det_score >= MASK_SCORE_THRESH))[0]
    det_id, det_score = det_id[valid], det_score[valid]
    det_bbox, det_mask = det_bbox[valid] / im_scale, det_mask[valid]
    size = (int(round(im_width / im_scale)), int(round(im_height / im_scale)))
    full_masks = tmask.fill(det_mask, det_bbox, size)
    results = []
    for bbox, label, score, mask in zip(det_bbox.astype("float32"), det_id.flat,
                                        det_score.flat, full_masks.astype("uint8")):
        bbox[2:4] -= bbox[:2]
        rle = cocomask.encode(np.array(mask[:, :, np.newaxis], order="F"))[0]
        rle["counts"] = rle["counts"].decode("ascii")
        results.append({"category": int(label), "bbox": [float(round(v, 2)) for v in bbox],
                        "score": float(round(score, 3)), "segmentation": rle})
    return results


def measure_postprocess(cfg, sample, context, settings):
    """Median seconds of :func:`validation_decode` on ``cfg.test.max_det`` fixed synthetic
    detections (the ones our side decodes), in the layout of its test graph's outputs: ids from
    0 (1, D, 1), scores (1, D, 1), boxes (1, D, 4), masks (1, D, M, M), at scale 1."""
    from gluoncv.nn.bbox import BBoxClipToImage

    height, width = sample.height, sample.width
    detections = synthetic.make_detections(cfg.test.max_det, height, width, cfg.num_classes,
                                           cfg.mask_size, seed=cfg.seed)
    outputs = [mx.nd.array(array, ctx=context) for array in (
        (detections.classes - 1)[None, :, None], detections.scores[None, :, None],
        detections.boxes[None], detections.masks[None])]
    image = inference_images(cfg, sample, context)[0]
    im_info = mx.nd.array([[height, width, 1.0]], ctx=context)
    clipper = BBoxClipToImage()
    pasted = len(validation_decode(clipper, image, outputs, im_info))  # untimed
    durations = time_calls(lambda: validation_decode(clipper, image, outputs, im_info),
                           warmup=settings.warmup, iters=settings.iters,
                           label="peer post-process", sync=mx.nd.waitall)
    return {"postprocess_s_per_img": median(durations), "postprocess_detections": pasted}
