"""The report: the workers' results combined, a table on stdout, the JSON file, a bar chart.

JSON layout (top level exactly these keys)::

    {"ours": {"train_img_s", "infer_s_per_img", "peak_mem_mb", ... extra keys},
     "peer": {... the same keys ...} or null,
     "speedup_train": ours train img/s / peer train img/s, or null,
     "speedup_infer": peer infer s/img / ours infer s/img, or null}

``infer_s_per_img`` is the test graph alone on both sides. Families whose tester pastes masks
(Mask R-CNN) add, on each side, ``postprocess_s_per_img`` (the per-image work after the graph
on ``postprocess_detections`` fixed detections), and ``infer_with_postprocess_s_per_img``
(their sum); the table shows their ratio.
"""
import json

from simpledet.benchmark.measure import TIMING_LR

LOADER_NOTE = ("input: one fixed synthetic batch (random pixels, random boxes, RPN targets "
               "precomputed by the package's own anchor_target); the data loader is not timed")
POLYGON_NOTE = ("gt polygons: one 16-vertex ellipse inscribed in each box, ours packed into "
                "gt_polys by the loader's assigner, the peer's rasterized to full-image masks by "
                "its train transform (untimed); the mask targets are made in each timed step")


def run_description(settings, cfg):
    """What every result shares (stored under "ours"); the proposal counts only for families
    with an RPN, the neck type 'p3-p7' for RetinaNet's (it has one kind)."""
    description = {
        "config": settings.config, "name": cfg.name, "family": type(cfg).__name__,
        "precision": settings.precision, "batch": settings.batch, "size": list(settings.size),
        "device": str(settings.device), "threads": settings.threads, "iters": settings.iters,
        "warmup": settings.warmup, "backbone": cfg.backbone.arch_name,
        "neck": getattr(cfg.neck, "type", "p3-p7"), "normalizer": cfg.backbone.normalizer}
    if hasattr(cfg, "rpn"):
        description.update(rpn_train_post_nms=cfg.rpn.train_post_nms,
                           rpn_test_post_nms=cfg.rpn.test_post_nms)
    return description


def combine(settings, cfg, results):
    """The report dict from the workers' results ({'ours', 'backbone'[, 'peer', 'profile']})."""
    ours = {**run_description(settings, cfg), **results["ours"], **results["backbone"],
            **results.get("profile", {})}
    ours["step_over_backbone_fpn"] = ours["train_s_per_iter"] / ours["backbone_fpn_s_per_iter"]
    peer = results.get("peer")
    return {
        "ours": ours, "peer": peer,
        "speedup_train": ours["train_img_s"] / peer["train_img_s"] if peer else None,
        "speedup_infer": peer["infer_s_per_img"] / ours["infer_s_per_img"] if peer else None}


def _speedup(ours, peer, higher_is_better):
    if peer is None:
        return "-"
    ratio = ours / peer if higher_is_better else peer / ours
    return f"{ratio:.2f}x " + ("faster" if ratio >= 1 else "slower")


def table_rows(report):
    """(metric, ours, peer, comparison) text rows."""
    ours, peer = report["ours"], report["peer"] or {}
    batch = ours["batch"]
    rows = []
    for key, label, fmt, higher_is_better in (
            ("train_img_s", "train img/s", "{:.3f}", True),
            ("train_s_per_iter", "train s/iter", "{:.3f}", False),
            ("infer_s_per_img", "infer s/img (batch 1)", "{:.3f}", False),
            ("infer_img_s", f"infer img/s (batch {batch})", "{:.3f}", True)):
        theirs = peer.get(key)
        rows.append((label, fmt.format(ours[key]), "-" if theirs is None else fmt.format(theirs),
                     _speedup(ours[key], theirs, higher_is_better)))
    if "infer_with_postprocess_s_per_img" in ours:
        count = ours["postprocess_detections"]
        for key, label in (("postprocess_s_per_img", f"post-process s/img ({count} masks)"),
                           ("infer_with_postprocess_s_per_img", "infer + post-process s/img")):
            theirs = peer.get(key)
            rows.append((label, f"{ours[key]:.3f}",
                         "-" if theirs is None else f"{theirs:.3f}",
                         _speedup(ours[key], theirs, False)))
    theirs = peer.get("peak_mem_mb")
    rows.append((f"peak train memory MB ({ours['peak_mem_kind']})", f"{ours['peak_mem_mb']:.0f}",
                 "-" if theirs is None else f"{theirs:.0f}",
                 "-" if theirs is None else f"{ours['peak_mem_mb'] / theirs:.2f}x peer's"))
    rows.append(("backbone+neck fwd+bwd s/iter", f"{ours['backbone_fpn_s_per_iter']:.3f}", "-",
                 "-"))
    rows.append(("train step / backbone+neck", f"{ours['step_over_backbone_fpn']:.2f}x", "-",
                 "-"))
    return rows


def run_notes(ours):
    """How our numbers were made."""
    height, width = ours["size"]
    padded = ours.get("input_shape", [height, width])
    lines = [f"config {ours['config']} ({ours['name']}), precision {ours['precision']}, "
             f"device {ours['device']}, {ours['threads']} threads (OMP_NUM_THREADS) per model",
             f"images {height}x{width} (ours padded to {padded[0]}x{padded[1]}), batch "
             f"{ours['batch']}, median of {ours['iters']} calls after {ours['warmup']} warm-up",
             LOADER_NOTE, f"random weights (no pretrained weights), SGD at lr {TIMING_LR:g} so "
             "they do not diverge (an update costs the same at any lr); peak memory of each "
             "model measured in its own process"]
    if "gt_polys" in ours.get("train_inputs", ()):
        lines.append(POLYGON_NOTE)
    if "infer_with_postprocess_s_per_img" in ours:
        lines.append("infer s/img: the test graph alone on both sides (boxes and M x M masks of "
                     "test.max_det detections); post-process: what each tester does per image "
                     f"after it (masks pasted into the image, RLE) on the same "
                     f"{ours['postprocess_detections']} fixed detections, timed apart")
    if ours["normalizer"] == "fixbn":
        lines.append("normalizer fixbn from random init normalizes nothing (the config "
                     "expects pretrained weights); the graph and its cost are the same")
    if ours.get("profile"):
        lines.append(f"per-operator profile of {ours['profiled_steps']} training steps (own "
                     f"process, not timed): {ours['profile']}")
    if ours.get("nonfinite_steps"):
        lines.append(f"{ours['nonfinite_steps']} of {ours['steps_run']} training steps had "
                     "non-finite losses: the step skipped their update (still timed; "
                     "their proposals and sampling may not be representative)")
    return lines


def peer_notes(ours, peer):
    """What the peer is, and where it differs from our settings."""
    lines = [f"peer: GluonCV {peer['model']} (fp32, its own architecture, our proposal/RoI "
             f"counts and classes; ours: backbone {ours['backbone']}, neck {ours['neck']}); "
             "its test graph takes 1 image per call"]
    options = peer.get("options", {})
    capped = [f"{name} {options[name]} (ours {ours[name]})"
              for name in ("rpn_train_post_nms", "rpn_test_post_nms")
              if options.get(name, ours[name]) < ours[name]]
    if capped:
        lines.append("peer proposals capped by its anchor count at this size: "
                     + ", ".join(capped))
    if "rcnn_max_dets" in options:
        lines.append(f"peer masks: on its {options['rcnn_max_dets']} best detections "
                     "(rcnn_max_dets = our test.max_det); in training its mask branch reuses "
                     "the box branch's 14x14 RoIAlign, ours pools the mask RoIs again (see "
                     "simpledet.benchmark.gluoncv_peer for what else differs)")
    return lines


def format_report(report):
    """The stdout report: notes, then the table."""
    rows = [("metric", "ours", "peer" if report["peer"] else "peer (none)", "ours vs peer")]
    rows += table_rows(report)
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                       for i, cell in enumerate(row)).rstrip() for row in rows]
    peer = report["peer"]
    notes = run_notes(report["ours"]) + (peer_notes(report["ours"], peer) if peer else [])
    return "\n".join(["", *notes, "", *lines])


def write_json(report, path):
    with open(path, "w") as f:
        json.dump(report, f, indent=2)


def write_plot(report, path):
    """Bar chart: throughputs (ours vs peer) and step times (ours, backbone+neck, peer)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ours, peer = report["ours"], report["peer"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.5))
    labels = ["train img/s", "infer img/s (batch 1)"]
    ours_values = [ours["train_img_s"], 1.0 / ours["infer_s_per_img"]]
    positions = range(len(labels))
    left.bar([p - 0.2 for p in positions], ours_values, 0.4, label="SimpleDet")
    if peer:
        left.bar([p + 0.2 for p in positions],
                 [peer["train_img_s"], 1.0 / peer["infer_s_per_img"]], 0.4, label="GluonCV")
    left.set_xticks(list(positions), labels)
    left.set_title("throughput (higher is better)")
    left.legend()
    names = ["ours step", "backbone+neck\nfwd+bwd"] + (["GluonCV step"] if peer else [])
    times = [ours["train_s_per_iter"], ours["backbone_fpn_s_per_iter"]] + (
        [peer["train_s_per_iter"]] if peer else [])
    right.bar(names, times, color=["C0", "C2", "C1"][:len(names)])
    right.set_title("training s/iter (lower is better)")
    height, width = ours["size"]
    figure.suptitle(f"{ours['name']} {ours['precision']} {height}x{width} batch "
                    f"{ours['batch']}, {ours['threads']} threads")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
