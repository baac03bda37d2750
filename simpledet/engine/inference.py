"""Single-image inference: the test graph on images of any size, one at a time.

An image goes through the test loader's steps (simpledet.data.loader: resize to
(cfg.input.short, cfg.input.long), normalize with the backbone's pixel mean/std, pad to its
landscape or portrait bucket), the detector's test graph (bound once per bucket), and the
detector's ``decode_test_outputs``: the result is in the image's own pixels. Used by
scripts/demo.py; any detector family works (the engine only talks to
simpledet.detectors.base.Detector).
"""
import os

import numpy as np

from simpledet.data.transforms import bucket_shape, normalize_pad_chw, resize_image
from simpledet.engine.build import SIZE_DIVISOR

__all__ = ["ImagePredictor", "WeightsError", "check_weights", "load_weights", "preprocess"]


class WeightsError(RuntimeError):
    """A parameter file that is missing, unreadable, or does not fit the test graph; the
    message names the file."""


def preprocess(image_rgb, cfg):
    """One image as a test batch of size 1, exactly as the test loader builds it.

    Args:
        image_rgb: uint8 (H, W, 3) RGB.
        cfg: the detector config (its ``input`` and ``backbone.pixel_mean/std``).

    Returns:
        {"data": (1, 3, Hb, Wb) float32, "im_info": (1, 3) float32 [h, w, scale]}.
    """
    height, width = image_rgb.shape[:2]
    resized, im_info = resize_image(image_rgb, cfg.input.short, cfg.input.long)
    bucket = bucket_shape(height, width, cfg.input.short, cfg.input.long, SIZE_DIVISOR)
    data = normalize_pad_chw(resized, cfg.backbone.pixel_mean, cfg.backbone.pixel_std, bucket)
    return {"data": data[None], "im_info": im_info[None]}


def _load_params_file(path):
    """(arg_params, aux_params, plain) of an mx.nd.save file; raises WeightsError."""
    import mxnet as mx

    from simpledet.engine.checkpoint import error_reason, split_prefixed

    if not os.path.isfile(path):
        raise WeightsError(f"{path}: parameter file not found")
    try:
        loaded = mx.nd.load(path)
    except (OSError, mx.base.MXNetError) as err:
        raise WeightsError(f"{path}: cannot load parameters ({error_reason(err)}); expected "
                           "a file written by mx.nd.save, e.g. a checkpoint's model.params"
                           ) from None
    if not isinstance(loaded, dict) or not loaded:
        raise WeightsError(f"{path}: holds no named parameters; expected a dict saved by "
                           "mx.nd.save, e.g. a checkpoint's model.params")
    return split_prefixed(loaded)


def load_weights(experiment_dir, iteration=None, params_file=None):
    """The parameters to test with: ``params_file`` (an mx.nd.save file, 'arg:'/'aux:' keys
    or plain names, or a checkpoint folder), else checkpoint ``iteration`` of the experiment
    (the latest when None).

    Returns:
        (arg_params, aux_params, source), source naming what was loaded. Plain (unprefixed)
        names are put in arg_params; check_weights moves them where the graph wants them.

    Raises:
        WeightsError / simpledet.engine.checkpoint.CheckpointError: naming the file or folder.
    """
    from simpledet.engine.checkpoint import (
        PARAMS_FILE,
        find_checkpoint,
        load_checkpoint,
    )

    if params_file is None:
        checkpoint = load_checkpoint(find_checkpoint(experiment_dir, iteration))
        return (checkpoint.arg_params, checkpoint.aux_params,
                f"{checkpoint.path} (iteration {checkpoint.iteration})")
    path = str(params_file)
    if os.path.isdir(path):
        path = os.path.join(path, PARAMS_FILE)
    arg_params, aux_params, plain = _load_params_file(path)
    return dict(arg_params, **plain), aux_params, path


def check_weights(symbol, data_shapes, arg_params, aux_params, source):
    """The parameters the graph needs, checked against it by name and shape.

    Args:
        symbol: the test symbol.
        data_shapes: {input name: shape} of one batch (parameter shapes do not depend on it).
        arg_params / aux_params: name -> NDArray (an aux state found among arg_params is moved).
        source: names the file in errors.

    Returns:
        (arg_params, aux_params) restricted to the graph's parameters.

    Raises:
        WeightsError: a parameter is missing or of another shape (the first few are named).
    """
    arg_shapes, _, aux_shapes = symbol.infer_shape(**data_shapes)
    wanted_args = {n: tuple(s) for n, s in zip(symbol.list_arguments(), arg_shapes)
                   if n not in data_shapes}
    wanted_aux = {n: tuple(s) for n, s in zip(symbol.list_auxiliary_states(), aux_shapes)}
    available = dict(arg_params)
    available.update(aux_params)
    wanted = dict(wanted_args, **wanted_aux)
    missing = sorted(set(wanted) - set(available))
    if missing:
        raise WeightsError(f"{source}: lacks {len(missing)} of the test graph's {len(wanted)} "
                           f"parameters, e.g. {missing[:3]}; is it a checkpoint of this "
                           "config?")
    wrong = [f"{n} {tuple(available[n].shape)} (the graph wants {shape})"
             for n, shape in sorted(wanted.items()) if tuple(available[n].shape) != shape]
    if wrong:
        raise WeightsError(f"{source}: {len(wrong)} parameter(s) of another shape than the "
                           f"test graph's: {'; '.join(wrong[:3])}; is it a checkpoint of this "
                           "config?")
    return ({n: available[n] for n in wanted_args}, {n: available[n] for n in wanted_aux})


class ImagePredictor:
    """The detector's test graph on one image at a time, results in the image's pixels.

    Args:
        cfg: the detector config.
        detector: a simpledet.detectors.base.Detector.
        context: one mx context.
        arg_params / aux_params: name -> NDArray (see load_weights).
        source: names the parameters in errors.

    Raises:
        WeightsError: the parameters do not fit the test graph.
    """

    def __init__(self, cfg, detector, context, arg_params, aux_params, source="parameters"):
        from simpledet.engine.tester import Predictor

        self.cfg, self.detector = cfg, detector
        symbol = detector.get_test_symbol()
        unknown = [n for n in detector.test_data_names if n not in ("data", "im_info")]
        if unknown:
            raise ValueError(f"{type(detector).__name__}: test inputs {unknown} are not made "
                             "by single-image preprocessing (data, im_info)")
        height, width = bucket_shape(1, 2, cfg.input.short, cfg.input.long, SIZE_DIVISOR)
        arg_params, aux_params = check_weights(
            symbol, detector.test_data_shapes(1, height, width), arg_params, aux_params, source)
        self.predictor = Predictor(symbol, list(detector.test_data_names), [context],
                                   arg_params, aux_params)

    def __call__(self, image_rgb):
        """Detections of one uint8 RGB (H, W, 3) image: the detector's result dict
        {"boxes" (N, 4) [x1, y1, x2, y2], "scores", "classes"(, "masks")} in its pixels."""
        batch = preprocess(image_rgb, self.cfg)
        outputs = self.predictor(batch)
        return self.detector.decode_test_outputs(outputs, batch["im_info"],
                                                 [tuple(image_rgb.shape[:2])])[0]


def detections_table(det, class_names, score_thresh):
    """[(score, [x1, y1, x2, y2], class name, label)] of the detections scoring >= the
    threshold, best first (what the demo prints)."""
    from simpledet.utils.draw import class_name, select_detections

    boxes = np.asarray(det["boxes"], dtype=np.float64).reshape(-1, 4)
    return [(float(det["scores"][i]), [float(v) for v in boxes[i]],
             class_name(det["classes"][i], class_names), int(det["classes"][i]))
            for i in select_detections(det, score_thresh)]
