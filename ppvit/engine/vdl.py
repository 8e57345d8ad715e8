"""VisualDL logging for training (``Global.use_visualdl: true``, PaddleClas's key): scalars per step and per
epoch in ``<run dir>/vdl/``, written by rank 0 only. View them with ``visualdl --logdir output/<run>/vdl``.

VisualDL is optional (``pip install visualdl``, tested with 2.5.3): :func:`check_visualdl` runs while the
engine is built, so a missing package stops the run before anything is written.

Tags: ``train/loss`` and ``train/lr`` per step (x = global step); ``epoch/train_loss``, ``epoch/train_top1``,
``epoch/val_loss``, ``epoch/val_top1``, ``epoch/val_top5`` and ``epoch/lr`` (the epoch's last step's) per epoch
(x = epoch; accuracies in %, as the logs print them).
"""
import os

from .config import ConfigError
from .runfiles import run_folder

VDL_DIR = run_folder("vdl", training=True)


def check_visualdl(enabled):
    """Raise ConfigError naming the fix when ``Global.use_visualdl`` is on and visualdl cannot be imported."""
    if not enabled:
        return
    try:
        import visualdl  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"Global.use_visualdl is true but visualdl cannot be imported ({e}): "
                          "pip install visualdl, or set -o Global.use_visualdl=false") from None


class VisualDLWriter:
    """A ``visualdl.LogWriter`` on ``logdir`` with the training loop's two calls."""

    def __init__(self, logdir):
        from visualdl import LogWriter

        os.makedirs(logdir, exist_ok=True)
        self.logdir = logdir
        self.writer = LogWriter(logdir=logdir)

    def step(self, step, loss, lr):
        self.writer.add_scalar("train/loss", float(loss), int(step))
        self.writer.add_scalar("train/lr", float(lr), int(step))

    def epoch(self, epoch, **scalars):
        """``scalars``: name -> value; None (e.g. no validation this epoch) is left out."""
        for name, value in scalars.items():
            if value is not None:
                self.writer.add_scalar(f"epoch/{name}", float(value), int(epoch))

    def close(self):
        self.writer.close()


def open_visualdl(engine):
    """The run's writer (``<run dir>/vdl``) on rank 0 when ``Global.use_visualdl``; else None."""
    if not (engine.cfg["Global"]["use_visualdl"] and engine.is_main):
        return None
    return VisualDLWriter(os.path.join(engine.run_dir, VDL_DIR))
