"""Inference over a split, mapping back to the original images, COCO evaluation, pictures.

The detector decodes its test outputs into per-image results in original-image pixels
(simpledet.detectors.base.Detector.decode_test_outputs). Faster R-CNN's test graph outputs
``dets`` (B, max_det, 6) [x1, y1, x2, y2, score, class] in network-input pixels (the resized
image, top-left aligned in the padded bucket), rows of -1 when unused. A box maps back to the
original image by the inverse of the loader's resize (x1 / s, (x2 + 1) / s - 1 for the scale
s = im_info[:, 2], "+1" convention; simpledet.data.transforms.unscale_boxes) and is clipped to
[0, width - 1] x [0, height - 1]. The RPN-only detector's results are its proposals (class 1),
evaluated by proposal AR and optionally written to a file (simpledet.engine.proposals).
"""
import json
import logging
import os

from simpledet.detectors.base import decode_detections
from simpledet.engine.evaluation import EVAL_TYPES
from simpledet.engine.module import GraphModule, to_data_batch
from simpledet.utils.draw import DEFAULT_SCORE_THRESH, write_picture

logger = logging.getLogger("simpledet.test")

JSON_KEYS = EVAL_TYPES["bbox"].json_keys  # ("AP", "AP50", "AP75", "APs", "APm", "APl")


class Predictor:
    """The test graph bound per bucket, with trained parameters.

    Args:
        symbol: the test symbol (e.g. one output dets; Mask R-CNN: dets, masks).
        data_names: its inputs (e.g. ["data", "im_info"]).
        contexts: mx contexts; batches split along axis 0.
        arg_params / aux_params: name -> NDArray (e.g. from a checkpoint).
    """

    def __init__(self, symbol, data_names, contexts, arg_params, aux_params):
        self.module = GraphModule(symbol, data_names, contexts, for_training=False)
        self.arg_params, self.aux_params = arg_params, aux_params

    def __call__(self, batch):
        """The test symbol's outputs (list of numpy arrays) for a loader batch."""
        data_batch = to_data_batch(batch, self.module.data_names)
        if not self.module.bound:
            self.module.bind(data_batch)
            needed = set(self.module.param_names)
            arg_params = {k: v for k, v in self.arg_params.items() if k in needed}
            missing = sorted(needed - set(arg_params))
            if missing:
                raise KeyError(f"the checkpoint lacks test-graph parameters {missing[:5]} "
                               f"({len(missing)} in all)")
            self.module.set_params(arg_params, self.aux_params)
        self.module.forward(data_batch)
        return self.module.outputs_numpy()


def predict(predictor, loader, image_sizes, decode=decode_detections):
    """Runs the predictor over a test-mode loader.

    Args:
        predictor: callable batch -> the test graph's outputs (a list of arrays, or the dets
            (B, D, 6) array itself for the default decode).
        loader: test-mode DetectionLoader (valid=False marks padding slots).
        image_sizes: image_id -> (height, width) of the original images.
        decode: (output, im_info, image sizes) -> per-image result dicts in original pixels
            (the detector's ``decode_test_outputs``).

    Returns:
        per-image dicts {"image_id", "boxes", "scores", "classes"} (original pixels), one per
        valid slot, in loader order.
    """
    detections = []
    for batch in loader:
        outputs = predictor(batch)
        ids = [int(i) for i in batch["image_ids"]]
        mapped = decode(outputs, batch["im_info"], [image_sizes[i] for i in ids])
        for image_id, valid, det in zip(ids, batch["valid"], mapped):
            if valid:
                detections.append(dict(det, image_id=image_id))
    return detections


def bbox_json(summaries):
    """The --json payload: each evaluation's headline numbers, e.g. {"bbox": {"AP", "AP50",
    "AP75", "APs", "APm", "APl"}} ("bbox" and "segm" for Mask R-CNN) or {"proposal": {"AR100",
    "AR300", "AR1000", ...}} (simpledet.engine.evaluation.EVAL_TYPES)."""
    return {iou_type: {k: summaries[iou_type][k] for k in EVAL_TYPES[iou_type].json_keys}
            for iou_type in summaries}


def write_json(payload, path):
    path = os.path.abspath(str(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def visualize(records, detections, class_names, out_dir, count,
              score_thresh=DEFAULT_SCORE_THRESH):
    """Writes the first ``count`` images with their detections scoring >= score_thresh to
    out_dir/<image_id>.png (simpledet.utils.draw: small images upscaled, one colour per class).

    Returns:
        the written paths.
    """
    from simpledet.data.coco import read_image

    by_id = {d["image_id"]: d for d in detections}
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for record in records[:count]:
        det = by_id.get(record["image_id"])
        if det is None:
            continue
        path = os.path.join(out_dir, f"{record['image_id']}.png")
        paths.append(write_picture(path, read_image(record), det, class_names, score_thresh))
    return paths


def run_test(cfg, detector, contexts, *, iteration=None, json_out=None, vis=0,
             vis_score=DEFAULT_SCORE_THRESH, num_workers=None, experiment_dir=None,
             proposals_out=None):
    """Evaluates a checkpoint on the val split.

    Args:
        cfg: frozen config.
        detector: a simpledet.detectors.base.Detector (get_test_symbol, test_data_names,
            decode_test_outputs, eval_types).
        contexts: mx contexts.
        iteration: checkpoint iteration (default: the latest).
        json_out: write {eval type: {headline numbers}} here (see bbox_json).
        vis: draw this many images to <experiment_dir>/vis/iter_<N>/.
        vis_score: the least score drawn.
        num_workers: loader workers (default cfg.input.loader_workers).
        experiment_dir: default cfg.experiment_dir.
        proposals_out: write every image's results (boxes in original pixels, scores) here as
            a proposal file (simpledet.engine.proposals); only for a detector whose results
            are proposals ('proposal' in its eval_types).

    Returns:
        {eval type: {summary key: value}} per ``detector.eval_types``: all 12 COCOeval
        numbers for "bbox" / "segm", {"AR100", ...} for "proposal".

    Raises:
        PrecisionError: cfg.precision cannot run on ``contexts`` (fp16 on CPU).
        NotProposalsError: ``proposals_out`` for a detector whose results are not proposals.
    """
    from simpledet.core.precision import check_precision_contexts
    from simpledet.engine.build import build_dataset, build_test_loader
    from simpledet.engine.checkpoint import checkpoint_name, find_checkpoint, load_checkpoint
    from simpledet.engine.evaluation import evaluate_detections

    check_precision_contexts(cfg.precision, contexts)
    if proposals_out:
        from simpledet.engine.proposals import require_proposals

        require_proposals(detector)
    experiment_dir = experiment_dir or cfg.experiment_dir
    checkpoint = load_checkpoint(find_checkpoint(experiment_dir, iteration))
    logger.info("testing %s (iteration %d)", checkpoint.path, checkpoint.iteration)
    dataset = build_dataset(cfg, "val", for_training=False)
    loader = build_test_loader(cfg, dataset.records, num_workers=num_workers)
    predictor = Predictor(detector.get_test_symbol(), list(detector.test_data_names), contexts,
                          checkpoint.arg_params, checkpoint.aux_params)
    sizes = {r["image_id"]: (r["height"], r["width"]) for r in dataset.records}
    try:
        detections = predict(predictor, loader, sizes, decode=detector.decode_test_outputs)
    finally:
        loader.close()
    skipped = sorted({file_name for file_name, _ in loader.bad_images})
    if skipped:  # input.skip_bad_images
        logger.warning("%d unreadable image(s) skipped (no detections: their boxes count as "
                       "missed in the AP): %s", len(skipped), ", ".join(skipped[:5]))
    name = checkpoint_name(checkpoint.iteration)
    results_file = os.path.join(experiment_dir, f"results_{name}_{detector.eval_types[0]}.json")
    summaries = evaluate_detections(dataset.ann_file, detections, dataset.label_to_cat_id,
                                    tuple(detector.eval_types), results_file=results_file)
    logger.info("results: %s", results_file)
    if proposals_out:
        from simpledet.engine.proposals import save_proposals

        logger.info("proposals of %d images: %s", len(detections),
                    save_proposals(proposals_out, detections))
    if json_out:
        write_json(bbox_json(summaries), json_out)
        what = "AR" if "proposal" in detector.eval_types else "AP"
        logger.info("%s numbers: %s", what, json_out)
    if vis:
        # proposals are class 1 of no category: label them as such
        names = ("proposal",) if "proposal" in detector.eval_types else dataset.class_names
        paths = visualize(dataset.records, detections, names,
                          os.path.join(experiment_dir, "vis", name), vis, vis_score)
        logger.info("%d pictures in %s", len(paths), os.path.join(experiment_dir, "vis", name))
    return summaries
