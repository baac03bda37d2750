"""The peer: GluonCV's closest Faster R-CNN, trained and run the way its own scripts do.

Model: ``faster_rcnn_fpn_resnet50_v1b_coco`` for FPN configs, ``faster_rcnn_resnet50_v1b_coco``
for the C4 layout; random weights (``pretrained=False, pretrained_base=False``); its own
architecture (anchors, RPN width, RoI size, head), with our proposal and RoI counts, class
count and image size. Training follows scripts/detection/faster_rcnn/train_faster_rcnn.py
(GluonCV 0.10): ``FasterRCNNDefaultTrainTransform`` makes the RPN targets with the net's anchor
generator, ``FasterRCNNTrainBatchify`` batches them, the net (hybridized with static
alloc/shape) returns its RCNN targets, the four losses (sigmoid BCE, Huber, softmax CE, Huber)
are normalized as there, then backward and ``gluon.Trainer.step``. Inference: ``net(data)``
outside autograd, one image per call (GluonCV's test graph is built for batch 1).
"""
import contextlib

import mxnet as mx
import numpy as np

from simpledet.benchmark.measure import (
    TIMING_LR,
    MemoryProbe,
    median,
    peak_rss_mb,
    progress,
    time_calls,
)

MODELS = {"fpn": "faster_rcnn_fpn_resnet50_v1b_coco", "none": "faster_rcnn_resnet50_v1b_coco"}
# The zoo models' anchors: (RPN strides, anchors per location).
ANCHOR_LAYOUTS = {"fpn": ((4, 8, 16, 32, 64), 3), "none": ((16,), 15)}


def model_name(cfg):
    """The GluonCV model zoo name closest to the config's layout."""
    return MODELS[cfg.neck.type]


def anchor_count(cfg, height, width):
    """A lower bound of the peer's anchors on an height x width image."""
    strides, per_location = ANCHOR_LAYOUTS[cfg.neck.type]
    return per_location * sum((height // s) * (width // s) for s in strides)


def model_options(cfg, height, width, batch):
    """Keyword values of GluonCV's ``get_faster_rcnn`` that follow our config.

    GluonCV's multi-level RPN takes ``pre_nms`` for all levels together and splits it evenly;
    ours is per level, hence the multiplication by the number of RPN levels. Its RPN cannot
    return more proposals than anchors (ours pads), so tiny images cap ``post_nms``.
    """
    levels = len(cfg.rpn_feature_strides)
    anchors = anchor_count(cfg, height, width)
    return {"rpn_train_pre_nms": cfg.rpn.train_pre_nms * levels,
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
def _zoo_keywords(values):
    """While active, GluonCV's predefined Faster R-CNN models build with ``values``.

    The zoo functions pass the proposal/RoI counts to ``get_faster_rcnn`` explicitly, so the
    same names given to ``get_model`` collide ("got multiple values for keyword argument");
    replacing them at that call keeps the zoo's architecture and changes only these values.
    """
    from gluoncv.model_zoo.rcnn.faster_rcnn import predefined_models

    original = predefined_models.get_faster_rcnn

    def build(**kwargs):
        return original(**{**kwargs, **values})

    predefined_models.get_faster_rcnn = build
    try:
        yield
    finally:
        predefined_models.get_faster_rcnn = original


def build_net(cfg, height, width, batch, context):
    """The initialized, hybridized peer network on ``context``."""
    import gluoncv

    with _zoo_keywords(model_options(cfg, height, width, batch)):
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
    step = PeerTrainStep(net, training_batch(net, cfg, sample, context), build_trainer(net, cfg))
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
