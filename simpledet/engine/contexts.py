"""Device contexts: the --gpus / --cpus command-line options and cfg.runtime -> mx contexts.

The CLI options are turned into config overrides (``runtime.device``, ``runtime.device_ids``)
before the config is frozen, so the derived values that depend on the number of devices
(``cfg.total_batch``, ``cfg.lr``, ``cfg.max_iter``) and the dumped config agree with what runs.
"""

CONTEXT_HELP = ("--gpus 0,1 trains on mx.gpu(0) and mx.gpu(1); --cpus N on N CPU contexts "
                "mx.cpu(0..N-1) (the multi-device code path without a GPU)")


def add_context_arguments(parser):
    """Adds the mutually exclusive ``--gpus IDS`` / ``--cpus N`` options."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--gpus", default=None, metavar="IDS",
                       help="comma-separated GPU ids, e.g. 0,1 (default: cfg.runtime)")
    group.add_argument("--cpus", default=None, type=int, metavar="N",
                       help="train/test on N CPU contexts (default: cfg.runtime)")


def context_overrides(gpus=None, cpus=None):
    """Config overrides for the ``--gpus`` / ``--cpus`` options.

    Args:
        gpus: "0,1" style string, or None.
        cpus: number of CPU contexts, or None.

    Returns:
        list of "key=value" strings for ``load_config(..., overrides)``.

    Raises:
        ValueError: a malformed id list or a non-positive count.
    """
    if gpus is not None and cpus is not None:
        raise ValueError("give either --gpus or --cpus, not both")
    if gpus is not None:
        try:
            ids = tuple(int(part) for part in str(gpus).split(",") if part.strip() != "")
        except ValueError:
            raise ValueError(f"--gpus {gpus!r}: expected comma-separated integers such as "
                             "0,1") from None
        if not ids or min(ids) < 0:
            raise ValueError(f"--gpus {gpus!r}: expected comma-separated ids >= 0 such as 0,1")
        return ["runtime.device=gpu", f"runtime.device_ids={ids!r}"]
    if cpus is not None:
        if int(cpus) < 1:
            raise ValueError(f"--cpus {cpus}: expected a count >= 1")
        return ["runtime.device=cpu", f"runtime.device_ids={tuple(range(int(cpus)))!r}"]
    return []


def make_contexts(runtime):
    """The mx contexts of ``cfg.runtime``: [mx.gpu(i) ...] or [mx.cpu(i) ...] over device_ids."""
    import mxnet as mx

    make = mx.gpu if runtime.device == "gpu" else mx.cpu
    return [make(int(i)) for i in runtime.device_ids]
