"""One measurement in its own process: 'ours' (train + inference), 'backbone' (backbone+neck
forward+backward), 'peer' (GluonCV train + inference) or 'profile' (our training step under
MXNet's profiler).

Separate processes keep the peak RSS of one model out of the other's, and give each the same
OpenMP thread count (set by the parent in the environment before MXNet starts).
"""
import json
import os
import tempfile

ROLES = ("ours", "backbone", "peer", "profile")


def synthetic_images(cfg, settings):
    from simpledet.benchmark.synthetic import make_images

    height, width = settings.size
    return make_images(settings.batch, height, width, cfg.num_classes, seed=cfg.seed)


def run_ours(cfg, settings):
    from simpledet.benchmark import ours
    from simpledet.engine.build import build_detector

    detector = build_detector(cfg)
    sample = synthetic_images(cfg, settings)
    bucket = ours.bucket_of(cfg, *settings.size)
    context = settings.device.context()
    with tempfile.TemporaryDirectory() as workdir:  # the trainer's folder; no hook writes
        result, trainer = ours.measure_training(cfg, detector, context, sample, bucket,
                                                settings, workdir)
    params = trainer.module.get_params()
    result.update(ours.measure_inference(detector, context, sample, bucket, params, settings))
    if ours.has_mask_postprocess(detector):
        result.update(ours.measure_postprocess(detector, *settings.size, settings))
        result["infer_with_postprocess_s_per_img"] = (result["infer_s_per_img"]
                                                      + result["postprocess_s_per_img"])
    result["input_shape"] = list(bucket)
    result["train_inputs"] = list(detector.train_data_names)
    return result


def run_backbone(cfg, settings):
    from simpledet.benchmark import ours
    from simpledet.engine.build import build_detector

    detector = build_detector(cfg)
    bucket = ours.bucket_of(cfg, *settings.size)
    return ours.measure_backbone(detector, settings.device.context(),
                                 synthetic_images(cfg, settings), bucket, settings)


def run_profile(cfg, settings):
    from simpledet.benchmark import ours
    from simpledet.engine.build import build_detector

    detector = build_detector(cfg)
    with tempfile.TemporaryDirectory() as workdir:
        return ours.profile_training(cfg, detector, settings.device.context(),
                                     synthetic_images(cfg, settings),
                                     ours.bucket_of(cfg, *settings.size), settings, workdir)


def run_peer(cfg, settings):
    import warnings

    from simpledet.benchmark import gluoncv_peer

    # Gluon's notes on constant anchors and unused parameters would drown the progress lines.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"mxnet\.gluon")
    height, width = settings.size
    context = settings.device.context()
    sample = synthetic_images(cfg, settings)
    net = gluoncv_peer.build_net(cfg, height, width, settings.batch, context)
    result = gluoncv_peer.measure_training(net, cfg, sample, context, settings)
    result.update(gluoncv_peer.measure_inference(net, cfg, sample, context, settings))
    if gluoncv_peer.peer_family(cfg) == gluoncv_peer.MASK:
        result.update(gluoncv_peer.measure_postprocess(cfg, sample, context, settings))
        result["infer_with_postprocess_s_per_img"] = (result["infer_s_per_img"]
                                                      + result["postprocess_s_per_img"])
    options = gluoncv_peer.model_options(cfg, height, width, settings.batch)
    result.update(model=gluoncv_peer.model_name(cfg), precision="fp32",
                  input_shape=[height, width],
                  options={k: v for k, v in options.items() if k != "classes"})
    return result


def run_role(role, settings):
    """The measurements of one role, as a JSON-able dict."""
    import simpledet  # noqa: F401  (loads the operator library)

    cfg = settings.load_config()
    runner = {"ours": run_ours, "backbone": run_backbone, "peer": run_peer,
              "profile": run_profile}[role]
    result = runner(cfg, settings)
    result["threads"] = int(os.environ.get("OMP_NUM_THREADS", settings.threads))
    return result


def write_result(result, path):
    """Writes the result where the parent reads it (atomically: a killed worker leaves none)."""
    partial = path + ".partial"
    with open(partial, "w") as f:
        json.dump(result, f)
    os.replace(partial, path)
