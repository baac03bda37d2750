"""Log setup for the command-line tools: messages to stdout and to a file in the experiment."""
import logging
import sys

FORMAT = "%(asctime)s %(levelname).1s %(message)s"


def setup_logging(log_file=None, level=logging.INFO, tag=None):
    """Configures the 'simpledet' logger (idempotent: earlier handlers are replaced).

    Args:
        log_file: also append messages here (e.g. experiments/<name>/train.log).
        level: logging level.
        tag: written in brackets before each message, e.g. 'rank 1/2' in a distributed run.

    Returns:
        the 'simpledet' logger.
    """
    root = logging.getLogger("simpledet")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    fmt = FORMAT.replace("%(message)s", f"[{tag}] %(message)s") if tag else FORMAT
    formatter = logging.Formatter(fmt, datefmt="%m-%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stdout)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    return root
