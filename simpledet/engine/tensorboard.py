"""Training scalars as TensorBoard event files (``tensorboard --logdir experiments/``).

The logging hook hands each window's record (the line it also appends to metrics.jsonl) to a
:class:`TensorBoardSink`, so both files show the same numbers. tensorboardX writes the files;
it is in the ``test`` extra and optional otherwise: without it the run says once how to get it
and trains on.
"""
import logging

logger = logging.getLogger("simpledet.train")

TENSORBOARD_DIR = "tensorboard"


class TensorBoardSink:
    """Writes logging records as scalars: ``loss/<name>``, ``loss/total``, ``lr``,
    ``speed/img_per_s``, ``grad_norm`` (when measured) and, with fp16 loss scaling,
    ``fp16/loss_scale`` and ``fp16/skipped_steps``; the step is the record's iteration.

    Args:
        logdir: folder of the event files (created if missing).
    """

    def __init__(self, logdir):
        from tensorboardX import SummaryWriter

        self.logdir = str(logdir)
        self._writer = SummaryWriter(self.logdir)

    def write(self, record):
        step = int(record["iteration"])
        scalars = {f"loss/{name}": value for name, value in record["losses"].items()}
        scalars["loss/total"] = record["loss"]
        scalars["lr"] = record["lr"]
        for key, tag in (("img_per_s", "speed/img_per_s"), ("grad_norm", "grad_norm"),
                         ("loss_scale", "fp16/loss_scale"),
                         ("skipped_steps", "fp16/skipped_steps")):
            if record.get(key) is not None:
                scalars[tag] = record[key]
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, float(value), step)
        self._writer.flush()  # a killed run keeps every window written so far

    def close(self):
        self._writer.close()


def open_tensorboard(logdir):
    """A TensorBoardSink on ``logdir``, or None (with a warning) when tensorboardX is missing."""
    try:
        return TensorBoardSink(logdir)
    except ImportError:
        logger.warning("train.tensorboard is on but tensorboardX is not installed (pip install "
                       "tensorboardX, or the 'test' extra); no event files are written. "
                       "--set train.tensorboard=false silences this")
        return None
