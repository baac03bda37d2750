"""Training hooks: logging, metrics, progress bar, checkpoints, loss curve.

The trainer calls, for every hook in order: ``before_train(trainer)`` once,
``before_step(trainer, iteration)`` and ``after_step(trainer, result)`` around each step
(``result`` is a steps.StepResult; ``trainer.iteration`` is then the count of completed
iterations), and ``after_train(trainer)`` once when the loop ends normally.
"""
import json
import logging
import math
import os
import sys
import time

from simpledet.engine.tensorboard import TENSORBOARD_DIR, open_tensorboard

logger = logging.getLogger("simpledet.train")

METRICS_FILE = "metrics.jsonl"
LOSS_CURVE_FILE = "loss_curve.png"


class Hook:
    """Base hook: every method is a no-op."""

    def before_train(self, trainer):
        pass

    def before_step(self, trainer, iteration):
        pass

    def after_step(self, trainer, result):
        pass

    def after_train(self, trainer):
        pass


def format_duration(seconds):
    seconds = int(max(0, seconds))
    days, rest = divmod(seconds, 86400)
    text = f"{rest // 3600}:{rest % 3600 // 60:02d}:{rest % 60:02d}"
    return f"{days}d {text}" if days else text


class LoggingHook(Hook):
    """Every ``interval`` iterations (and at the last one): logs each loss averaged over the
    window, the total, the lr, img/s and the ETA (with fp16 loss scaling also the last step's
    loss scale and the updates skipped so far), and appends the same as one JSON line to
    ``<experiment_dir>/metrics.jsonl`` and to each sink (an object with ``write(record)`` and
    ``close()``, e.g. tensorboard.TensorBoardSink).

    The first step of a run (graph binding, memory planning) is left out of the speed.
    """

    def __init__(self, interval, metrics_path=None, sinks=()):
        self.interval = int(interval)
        self.metrics_path = metrics_path
        self.sinks = [s for s in sinks if s is not None]
        self._reset()
        self._window_start = None

    def _reset(self):
        self._sums, self._count, self._images = {}, 0, 0

    def before_train(self, trainer):
        if self.metrics_path:
            os.makedirs(os.path.dirname(os.path.abspath(self.metrics_path)), exist_ok=True)

    def after_step(self, trainer, result):
        now = time.perf_counter()
        if self._window_start is None:  # the first step binds the graph: not timed
            self._window_start = now
        else:
            self._count += 1
            self._images += trainer.images_per_iteration
        for name, value in result.losses.items():
            self._sums.setdefault(name, []).append(value)
        done = trainer.iteration
        if done % self.interval and done != trainer.max_iter:
            return
        elapsed = now - self._window_start
        speed = self._images / elapsed if self._count and elapsed > 0 else float("nan")
        seconds_per_iter = elapsed / self._count if self._count else float("nan")
        eta = (trainer.max_iter - done) * seconds_per_iter
        losses = {n: sum(v) / len(v) for n, v in self._sums.items()}
        total = sum(losses.values())
        parts = [f"iter {done}/{trainer.max_iter}", f"lr {result.lr:.5g}"]
        parts += [f"{n} {v:.4f}" for n, v in losses.items()]
        parts += [f"loss {total:.4f}"]
        if result.loss_scale is not None:
            parts += [f"loss_scale {result.loss_scale:g}", f"skipped {result.skipped_steps}"]
        if result.grad_norm is not None:
            parts += [f"grad_norm {result.grad_norm:.4g}"]
        parts += [f"{speed:.2f} img/s",
                  f"eta {format_duration(eta) if math.isfinite(eta) else '?'}"]
        logger.info("  ".join(parts))
        record = {"iteration": done, "lr": result.lr, "losses": losses, "loss": total,
                  "img_per_s": speed if math.isfinite(speed) else None, "time": time.time()}
        if result.loss_scale is not None:
            record.update(loss_scale=result.loss_scale, skipped_steps=result.skipped_steps)
        if result.grad_norm is not None:
            record["grad_norm"] = result.grad_norm
        if self.metrics_path:
            with open(self.metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
        for sink in self.sinks:
            sink.write(record)
        self._reset()
        self._window_start = now

    def after_train(self, trainer):
        for sink in self.sinks:
            sink.close()


class ProgressBarHook(Hook):
    """A one-line progress bar on a terminal (stderr); silent when stderr is not a TTY."""

    def __init__(self, stream=None, width=30):
        self.stream = stream or sys.stderr
        self.width = width
        self.enabled = bool(getattr(self.stream, "isatty", lambda: False)())

    def after_step(self, trainer, result):
        if not self.enabled:
            return
        done, total = trainer.iteration, trainer.max_iter
        filled = int(self.width * done / max(1, total))
        bar = "#" * filled + "." * (self.width - filled)
        self.stream.write(f"\r[{bar}] {done}/{total} loss {result.total_loss:.4f} "
                          f"lr {result.lr:.4g}")
        self.stream.flush()

    def after_train(self, trainer):
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


class CheckpointHook(Hook):
    """Saves a checkpoint every ``interval`` iterations and at the end of training."""

    def __init__(self, interval):
        self.interval = int(interval)

    def after_step(self, trainer, result):
        if trainer.iteration % self.interval == 0 and trainer.iteration != trainer.max_iter:
            trainer.save_checkpoint()

    def after_train(self, trainer):
        if trainer.last_checkpoint_iteration != trainer.iteration:
            trainer.save_checkpoint()


class LossCurveHook(Hook):
    """Plots metrics.jsonl to a PNG when training ends."""

    def __init__(self, metrics_path, image_path):
        self.metrics_path = metrics_path
        self.image_path = image_path

    def after_train(self, trainer):
        from simpledet.utils.plot import plot_loss_curves

        try:
            if plot_loss_curves(self.metrics_path, self.image_path):
                logger.info("loss curve: %s", self.image_path)
        except Exception as err:  # noqa: BLE001 (a plot must not fail a finished training)
            logger.warning("could not plot the loss curve: %s: %s", type(err).__name__, err)


def default_hooks(experiment_dir, log_interval, checkpoint_interval, progress_stream=None, *,
                  write_files=True, tensorboard=False, stop_when_dead=True):
    """The standard hook list of a training run.

    write_files=False (distributed workers other than rank 0): log lines only; no metrics
    file, event files, checkpoint, loss curve or progress bar. tensorboard=True also writes
    the logged scalars as TensorBoard event files under ``<experiment_dir>/tensorboard``.
    The health check (gradient norm, dead-network stop; ``stop_when_dead=False`` only logs)
    comes first, so the logging hook reports its measurement.
    """
    from simpledet.engine.health import HealthHook

    health = HealthHook(log_interval, stop=stop_when_dead)
    if not write_files:
        return [health, LoggingHook(log_interval)]
    metrics = os.path.join(experiment_dir, METRICS_FILE)
    sinks = ([open_tensorboard(os.path.join(experiment_dir, TENSORBOARD_DIR))] if tensorboard
             else [])
    return [health, LoggingHook(log_interval, metrics, sinks), ProgressBarHook(progress_stream),
            CheckpointHook(checkpoint_interval),
            LossCurveHook(metrics, os.path.join(experiment_dir, LOSS_CURVE_FILE))]
