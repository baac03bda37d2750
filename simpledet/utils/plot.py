"""Loss curves from a metrics.jsonl (one JSON object per logged iteration)."""
import json
import os


def read_metrics(path):
    """The logged records, one per iteration (a resumed run's later record wins), sorted.

    Returns:
        list of dicts with "iteration", "lr", "losses", ...; empty if the file is absent.
    """
    if not os.path.isfile(path):
        return []
    by_iteration = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a killed run
            by_iteration[int(record["iteration"])] = record
    return [by_iteration[k] for k in sorted(by_iteration)]


def plot_loss_curves(metrics_path, image_path):
    """Draws every loss, the total and the lr against the iteration into a PNG.

    Returns:
        True if a plot was written (False when there is nothing to plot).
    """
    records = read_metrics(metrics_path)
    if not records:
        return False
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    iterations = [r["iteration"] for r in records]
    names = list(records[-1]["losses"])
    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(9, 7), sharex=True,
                                         gridspec_kw={"height_ratios": [3, 1]})
    for name in names:
        ax_loss.plot(iterations, [r["losses"].get(name, float("nan")) for r in records],
                     label=name)
    ax_loss.plot(iterations, [r["loss"] for r in records], label="total", color="black")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(loc="upper right", fontsize="small")
    ax_loss.grid(alpha=0.3)
    ax_lr.plot(iterations, [r["lr"] for r in records], color="tab:gray")
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("iteration")
    ax_lr.grid(alpha=0.3)
    fig.tight_layout()
    tmp = image_path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, image_path)
    return True
