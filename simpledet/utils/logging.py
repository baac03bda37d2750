"""Log setup for the command-line tools: messages to stdout and to a file in the experiment."""
import logging
import sys

FORMAT = "%(asctime)s %(levelname).1s %(message)s"


def setup_logging(log_file=None, level=logging.INFO):
    """Configures the 'simpledet' logger (idempotent: earlier handlers are replaced).

    Args:
        log_file: also append messages here (e.g. experiments/<name>/train.log).
        level: logging level.

    Returns:
        the 'simpledet' logger.
    """
    root = logging.getLogger("simpledet")
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    formatter = logging.Formatter(FORMAT, datefmt="%m-%d %H:%M:%S")
    handlers = [logging.StreamHandler(sys.stdout)]
    if log_file:
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    return root
