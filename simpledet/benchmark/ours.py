"""Our side of the benchmark: the training step, inference, and the backbone+neck alone.

Everything is built by the package's own code paths: ``build_detector``, ``build_trainer`` (its
step: SgdStep, or LossScaledStep for fp16), ``GraphModule`` for inference, the detector's own
``decode_test_outputs`` for the post-processing of families with masks, and the detector's
own backbone and neck for the backbone-only graph, all with the config's normalizer and
precision. Each function returns plain numbers for the JSON report.
"""
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
from simpledet.engine.module import GraphModule, to_data_batch
from simpledet.engine.steps import NonFiniteLossError

PROFILED_STEPS = 5  # at most; an aggregate table needs few


def bucket_of(cfg, height, width):
    """The padded input shape of an height x width image (the loader's bucket)."""
    from simpledet.data.transforms import bucket_shape
    from simpledet.engine.build import SIZE_DIVISOR

    return bucket_shape(height, width, cfg.input.short, cfg.input.long, SIZE_DIVISOR)


class TrainStep:
    """One call = one training iteration through the trainer's own step.

    A non-finite loss (possible with fixbn from random init, which normalizes nothing) makes the
    step raise before the update; the benchmark counts it and goes on, because the cost of the
    step is what is measured, not the numbers it produces.
    """

    def __init__(self, trainer, data_batch):
        self.trainer = trainer
        self.data_batch = data_batch
        self.iteration = 0
        self.nonfinite_steps = 0

    def __call__(self):
        trainer = self.trainer
        try:
            trainer.step(trainer.module, self.data_batch, self.iteration,
                         trainer.schedule.lr_at(self.iteration))
        except NonFiniteLossError:
            self.nonfinite_steps += 1
        self.iteration += 1


def build_train_step(cfg, detector, context, sample, bucket, workdir):
    """A bound, initialized trainer (lr TIMING_LR) and a TrainStep on the fixed synthetic
    batch."""
    from simpledet.engine.schedule import LrSchedule
    from simpledet.engine.trainer import build_trainer

    trainer = build_trainer(cfg, detector, None, [context], experiment_dir=workdir, hooks=[],
                            schedule=LrSchedule(base_lr=TIMING_LR, max_iter=cfg.max_iter),
                            load_pretrained_weights=False)
    batch = synthetic.training_batch(cfg, detector.target_assigners([bucket]), sample, bucket,
                                     seed=cfg.seed)
    batch.update(trainer.step.extra_inputs(len(sample.images)))  # fp16: the loss scale input
    data_batch = to_data_batch(batch, trainer.data_names)
    trainer._prepare(data_batch)  # bind, init params, optimizer: what train() does first
    return trainer, TrainStep(trainer, data_batch)


def measure_training(cfg, detector, context, sample, bucket, settings, workdir):
    """Times the training step.

    Returns:
        (result dict, trainer) -- the trainer's parameters feed the inference benchmark.
    """
    progress(f"ours: building and binding the training graph ({bucket[0]}x{bucket[1]})")
    trainer, step = build_train_step(cfg, detector, context, sample, bucket, workdir)
    memory = MemoryProbe(context)
    durations = time_calls(step, warmup=settings.warmup, iters=settings.iters,
                           label="ours train", sync=mx.nd.waitall, after_call=memory.sample)
    seconds = median(durations)
    return {"train_s_per_iter": seconds, "train_img_s": len(sample.images) / seconds,
            "train_times_s": durations, "peak_mem_mb": memory.peak_mb(),
            "peak_mem_kind": memory.kind, "peak_rss_mb": peak_rss_mb(),
            "nonfinite_steps": step.nonfinite_steps, "steps_run": step.iteration}, trainer


def profile_training(cfg, detector, context, sample, bucket, settings, workdir):
    """MXNet's aggregate per-operator table of our training step, written to
    ``settings.profile`` (its own process: the timed runs never have a profiler configured).

    The profiler is configured before the graph is bound, or the symbolic executors'
    operators would not be seen; MXNet also writes its chrome trace to ``<profile>.trace.json``
    at exit.
    """
    mx.profiler.set_config(profile_all=True, aggregate_stats=True,
                           filename=settings.profile + ".trace.json")
    progress("profile: building and binding the training graph")
    _, step = build_train_step(cfg, detector, context, sample, bucket, workdir)
    calls = min(settings.iters, PROFILED_STEPS)
    time_calls(step, warmup=settings.warmup, iters=0, label="profile", sync=mx.nd.waitall)
    mx.profiler.set_state("run")
    time_calls(step, warmup=0, iters=calls, label="profiled train", sync=mx.nd.waitall)
    mx.profiler.set_state("stop")
    table = mx.profiler.dumps(reset=True, format="table", sort_by="total", ascending=False)
    with open(settings.profile, "w") as f:
        f.write(table)
    progress(f"per-operator table of {calls} training steps written to {settings.profile}")
    return {"profile": settings.profile, "profiled_steps": calls}


def inference_module(detector, context, sample, bucket, params):
    """(bound test-graph GraphModule, its DataBatch) for the images of ``sample``."""
    batch = synthetic.inference_batch(detector.cfg, sample, bucket)
    data_batch = to_data_batch(batch, detector.test_data_names)
    module = GraphModule(detector.get_test_symbol(), detector.test_data_names, [context],
                         for_training=False)
    module.bind(data_batch)
    module.set_params(*params)
    return module, data_batch


def time_inference(detector, context, sample, bucket, params, settings, label):
    """Median seconds of one forward pass of the test graph over ``sample``'s images."""
    module, data_batch = inference_module(detector, context, sample, bucket, params)
    durations = time_calls(lambda: module.forward(data_batch), warmup=settings.warmup,
                           iters=settings.iters, label=label, sync=mx.nd.waitall)
    return median(durations)


def measure_inference(detector, context, sample, bucket, params, settings):
    """Latency per image at batch 1 and throughput at the benchmark batch."""
    progress("ours: binding the test graph")
    first = sample.head(1)
    latency = time_inference(detector, context, first, bucket, params, settings,
                             "ours infer batch 1")
    batch = len(sample.images)
    batch_seconds = latency if batch == 1 else time_inference(
        detector, context, sample, bucket, params, settings, f"ours infer batch {batch}")
    return {"infer_s_per_img": latency, "infer_img_s": batch / batch_seconds,
            "infer_batch": batch}


def has_mask_postprocess(detector):
    """Whether the family's tester turns masks into image masks after the graph (Mask R-CNN:
    paste + RLE, a per-image cost worth measuring; box decoding alone is not)."""
    return "segm" in detector.eval_types


def synthetic_test_outputs(detections):
    """The test graph's outputs for one image holding ``detections``: [dets (1, D, 6)
    [x1, y1, x2, y2, score, class], masks (1, D, M, M)] as NDArrays (as a forward leaves them)."""
    dets = np.concatenate([detections.boxes, detections.scores[:, None],
                           detections.classes[:, None]], axis=1).astype(np.float32)
    return [mx.nd.array(dets[None]), mx.nd.array(detections.masks[None])]


def measure_postprocess(detector, height, width, settings):
    """Median seconds of what the tester does per image after the graph: outputs to NumPy and
    ``detector.decode_test_outputs`` (boxes to the original image; Mask R-CNN: masks pasted into
    it at threshold 0.5 and RLE-encoded), on ``cfg.test.max_det`` fixed synthetic detections
    (synthetic.make_detections, the peer decodes the same ones), at scale 1."""
    cfg = detector.cfg
    detections = synthetic.make_detections(cfg.test.max_det, height, width, cfg.num_classes,
                                           cfg.mask_size, seed=cfg.seed)
    outputs = synthetic_test_outputs(detections)
    im_info = np.array([[height, width, 1.0]], np.float32)

    def decode():
        return detector.decode_test_outputs([o.asnumpy() for o in outputs], im_info,
                                            [(height, width)])

    pasted = len(decode()[0]["masks"])  # untimed: how many masks one call pastes
    durations = time_calls(decode, warmup=settings.warmup, iters=settings.iters,
                           label="ours post-process", sync=mx.nd.waitall)
    return {"postprocess_s_per_img": median(durations), "postprocess_detections": pasted}


def backbone_neck_symbol(detector):
    """backbone -> neck, every feature map the heads read summed into one MakeLoss, with the
    detector's precision plan (so bf16/fp16 convert the same components)."""
    from simpledet.models.precision import PrecisionPlan

    data = mx.sym.var("data")
    plan = PrecisionPlan.from_config(detector.cfg)
    backbone_features = detector.backbone.get_features(data)
    plan.mark("backbone", [data], list(backbone_features.values()))
    features = detector.neck.get_features(backbone_features)
    plan.mark("neck", list(backbone_features.values()), list(features.values()))
    names = dict.fromkeys(detector.neck.rpn_feature_names + detector.neck.roi_feature_names)
    total = mx.sym.add_n(*[mx.sym.sum(features[name]) for name in names])
    return plan.apply(mx.sym.Group([mx.sym.MakeLoss(total, name="backbone_neck_loss")]),
                      ["data"])


def measure_backbone(detector, context, sample, bucket, settings):
    """Forward + backward of backbone+neck alone (no update), with the detector's frozen
    parameters, on the same images: the floor under the training step."""
    from simpledet.engine.trainer import match_fixed_params

    progress("backbone+neck: building and binding")
    symbol = backbone_neck_symbol(detector)
    params = [n for n in symbol.list_arguments() if n != "data"]
    fixed = match_fixed_params(params, detector.fixed_param_patterns())
    module = GraphModule(symbol, ["data"], [context], fixed)
    batch = synthetic.inference_batch(detector.cfg, sample, bucket)
    data_batch = to_data_batch({"data": batch["data"]}, ["data"])
    module.bind(data_batch)
    module.init_params(detector.initializer())
    memory = MemoryProbe(context)
    durations = time_calls(lambda: module.forward_backward(data_batch),
                           warmup=settings.warmup, iters=settings.iters,
                           label="backbone+neck fwd+bwd", sync=mx.nd.waitall,
                           after_call=memory.sample)
    return {"backbone_fpn_s_per_iter": median(durations), "backbone_fpn_times_s": durations,
            "backbone_fpn_peak_mem_mb": memory.peak_mb()}
