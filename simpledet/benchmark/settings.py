"""What one benchmark run measures: parsed options and the config they produce.

The parent process and each worker parse the same command line into the same
:class:`Settings` and load the same config from it, so they cannot disagree.
"""
import re
from dataclasses import dataclass

PEERS = ("none", "gluoncv")
SIZE_PATTERN = re.compile(r"^(\d+)x(\d+)$")


class SettingsError(ValueError):
    """A bad option value (printed as one error line, exit code 2)."""


def parse_size(text):
    """'600x800' -> (600, 800): height x width, both positive.

    Raises:
        SettingsError: not HxW with positive integers.
    """
    match = SIZE_PATTERN.match(str(text).strip())
    if not match or min(int(match.group(1)), int(match.group(2))) < 1:
        raise SettingsError(f"--size {text!r}: expected HEIGHTxWIDTH with positive integers, "
                            "e.g. 600x800")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class Device:
    """The one device a benchmark runs on."""

    kind: str  # "cpu" or "gpu"
    index: int

    def context(self):
        import mxnet as mx

        return mx.gpu(self.index) if self.kind == "gpu" else mx.cpu(self.index)

    def __str__(self):
        return f"{self.kind}({self.index})"


def gpu_count():
    import mxnet as mx

    try:
        return mx.context.num_gpus()
    except mx.base.MXNetError:  # a CPU-only build
        return 0


def resolve_device(args, cfg):
    """--gpus ID / --cpus 1, else the config's device when it exists here, else cpu(0).

    Returns:
        (Device, note or None): the note says when a GPU config falls back to the CPU.

    Raises:
        SettingsError: more than one device asked for.
    """
    if args.gpus is not None:
        ids = [part for part in str(args.gpus).split(",") if part.strip()]
        if len(ids) != 1 or not ids[0].strip().isdigit():
            raise SettingsError(f"--gpus {args.gpus!r}: the benchmark runs on one device; give "
                                "one GPU id, e.g. --gpus 0")
        return Device("gpu", int(ids[0])), None
    if args.cpus is not None:
        if args.cpus != 1:
            raise SettingsError(f"--cpus {args.cpus}: the benchmark runs on one device; use "
                                "--cpus 1 (threads are set with --threads)")
        return Device("cpu", 0), None
    if cfg.runtime.device == "gpu":
        if gpu_count() > 0:
            return Device("gpu", int(cfg.runtime.device_ids[0])), None
        return Device("cpu", 0), "the config asks for GPUs but none is visible: running on cpu(0)"
    return Device("cpu", 0), None


@dataclass(frozen=True)
class Settings:
    """Resolved options of a run.

    Attributes:
        config: config file path.
        overrides: the user's --set values.
        precision: fp32 / bf16 / fp16.
        batch: images per training step (and the inference throughput batch).
        size: (height, width) of the synthetic images.
        iters / warmup: timed and untimed calls per measurement.
        threads: OpenMP threads of every worker.
        peer: 'none' or 'gluoncv'.
        device: the Device.
        profile: path of the per-operator table, or None.
        device_note: why the device differs from the config's, or None.
    """

    config: str
    overrides: tuple
    precision: str
    batch: int
    size: tuple
    iters: int
    warmup: int
    threads: int
    peer: str
    device: Device
    profile: str | None = None
    device_note: str | None = None

    def config_overrides(self):
        """The --set values plus what the benchmark fixes: size, batch, precision, one
        device, no pretrained weights (none exist here, and timing does not need them)."""
        height, width = self.size
        return list(self.overrides) + [
            "pretrain=none", f"precision={self.precision}",
            f"input.short={min(height, width)}", f"input.long={max(height, width)}",
            f"train.images_per_device={self.batch}", f"test.images_per_device={self.batch}",
            f"runtime.device={self.device.kind}", f"runtime.device_ids=({self.device.index},)",
            "runtime.kvstore=local", "runtime.num_machines=1"]

    def load_config(self):
        """The frozen config the benchmark runs (ConfigError on a bad combination, e.g. fp16
        on a CPU)."""
        return quiet_load_config(self.config, self.config_overrides())


def quiet_load_config(path, overrides):
    """load_config without the fixbn-without-weights warning: expected here, and the report
    says it once."""
    import warnings

    from simpledet.config import load_config

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="backbone.normalizer is 'fixbn'")
        return load_config(path, overrides)


def resolve_settings(args):
    """Settings from parsed arguments; options left out come from the config.

    Raises:
        SettingsError: a malformed or out-of-range option.
        ConfigError: the config file is missing or invalid.
    """
    from simpledet.utils.threads import available_cores

    if args.peer not in PEERS:
        raise SettingsError(f"--peer {args.peer!r}: expected one of {', '.join(PEERS)}")
    size = parse_size(args.size) if args.size is not None else None
    for name in ("batch", "iters", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SettingsError(f"--{name} {value}: must be >= 1")
    if args.warmup < 0:
        raise SettingsError(f"--warmup {args.warmup}: must be >= 0")
    base = quiet_load_config(args.config, args.overrides)
    if args.peer == "gluoncv" and not hasattr(base, "rpn"):
        raise SettingsError(f"--peer gluoncv compares Faster R-CNN-family configs (GluonCV's "
                            f"Faster R-CNN); {args.config} is a {type(base).__name__}: leave "
                            f"--peer out")
    device, note = resolve_device(args, base)
    return Settings(
        config=args.config, overrides=tuple(args.overrides),
        precision=args.precision or base.precision,
        batch=args.batch or base.train.images_per_device,
        size=size or (base.input.short, base.input.long), iters=args.iters,
        warmup=args.warmup, threads=args.threads or available_cores(), peer=args.peer,
        device=device, profile=args.profile, device_note=note)
