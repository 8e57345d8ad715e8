"""``train.log``: the ``ppvit`` logger's console and file handlers.

Both receive the per-step lines (every ``Global.print_interval`` steps, as PaddleClas's ``print_batch_step``)
and the per-epoch summaries; between step lines the console shows a tqdm bar.
"""
import logging
import os
import sys

import numpy as np

LOGGER_NAME = "ppvit"


class _ConsoleHandler(logging.StreamHandler):
    """Console lines written with ``tqdm.write``, which clears the training bar and redraws it below the line,
    so the per-step lines (``Global.print_interval``) and the bar do not overwrite each other.

    The stream is looked up when a line is written (as logging's own last-resort handler does), not kept:
    a handler set up while ``sys.stdout`` was redirected (a notebook cell, a test capture) would otherwise
    keep writing to a stream that has since been closed."""

    def __init__(self):
        super().__init__(sys.stdout)

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__/setStream assign it; the current sys.stdout is used
        pass

    def emit(self, record):
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


def format_lr(lr):
    """A learning rate as every log line prints it: 6 significant digits, always positional (``0.0025``,
    ``0.0000380602``), so that step lines, epoch lines and the header never mix ``0.00363636`` with
    ``2.27273e-05``."""
    return np.format_float_positional(float(lr), precision=6, unique=False, fractional=False, trim="-")


def get_logger():
    return logging.getLogger(LOGGER_NAME)


def setup_logging(log_file=None, console=True, console_level=logging.INFO):
    """Console lines (INFO and up) on stdout; ``log_file`` (append mode) receives them too, plus DEBUG records
    and the records logged with ``extra={"file_only": True}`` (messages the tools print to stderr themselves).

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
        h = _ConsoleHandler()
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
