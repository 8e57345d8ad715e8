"""``train.log``: the ``ppvit`` logger's console and file handlers."""
import logging
import os
import sys

LOGGER_NAME = "ppvit"


def get_logger():
    return logging.getLogger(LOGGER_NAME)


def setup_logging(log_file=None, console=True, console_level=logging.INFO):
    """Console lines on stdout; ``log_file`` (append mode) also receives the per-step lines and the records
    logged with ``extra={"file_only": True}`` (messages the tools print to stderr themselves).

    ``train.log`` is append-only: a kill leaves every line written so far, and a resumed run continues it.
    """
    logger = get_logger()
    logger.setLevel(logging.DEBUG)
    for h in list(logger.handlers):
        if getattr(h, "_ppvit", False):
            logger.removeHandler(h)
            h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    if console:
        h = logging.StreamHandler(sys.stdout)
        h.setLevel(console_level)
        h.setFormatter(logging.Formatter("%(message)s"))
        h.addFilter(lambda record: not getattr(record, "file_only", False))
        h._ppvit = True
        logger.addHandler(h)
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        h = logging.FileHandler(log_file, mode="a", encoding="utf-8")
        h.setLevel(logging.DEBUG)
        h.setFormatter(fmt)
        h._ppvit = True
        logger.addHandler(h)
    logger.propagate = False
    return logger


def close_logging():
    logger = get_logger()
    for h in list(logger.handlers):
        if getattr(h, "_ppvit", False):
            logger.removeHandler(h)
            h.close()
