"""``train.log`` and the machine-readable history (``history.json``)."""
import json
import logging
import math
import os
import sys

from ..io import atomic_path

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


def finite_or_null(obj):
    """``obj`` with every NaN or infinite float replaced by None (JSON's null), recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    if hasattr(obj, "dtype") and hasattr(obj, "tolist"):  # numpy scalars and arrays
        return finite_or_null(obj.tolist())
    return obj


def strict_json(data, indent=1):
    """Strict JSON text (no NaN/Infinity, which JSON readers other than Python's reject): non-finite numbers
    become null."""
    return json.dumps(finite_or_null(data), indent=indent, allow_nan=False)


class History:
    """Loss/lr per step and loss/accuracy per epoch; saved as JSON and kept in the resume state."""

    STEP_KEYS = ("step", "epoch", "loss", "lr")
    EPOCH_KEYS = ("epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5",
                  "time", "images_per_sec")

    def __init__(self, state=None):
        self.steps = {k: [] for k in self.STEP_KEYS}
        self.epochs = {k: [] for k in self.EPOCH_KEYS}
        if state:
            for k in self.STEP_KEYS:
                self.steps[k] = list(state["steps"][k])
            for k in self.EPOCH_KEYS:
                self.epochs[k] = list(state["epochs"][k])

    def add_step(self, **values):
        for k in self.STEP_KEYS:
            self.steps[k].append(values[k])

    def add_epoch(self, **values):
        for k in self.EPOCH_KEYS:
            self.epochs[k].append(values.get(k))

    def state_dict(self):
        return {"steps": {k: list(v) for k, v in self.steps.items()},
                "epochs": {k: list(v) for k, v in self.epochs.items()}}

    def save(self, path, extra=None):
        data = dict(extra or {}, **self.state_dict())
        with atomic_path(path) as tmp:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(strict_json(data))

    def records(self):
        """The notebooks' ``loss_record``/``acc_record`` dicts for ``plot_learning_curve``."""
        ev = [i for i, v in enumerate(self.epochs["val_loss"]) if v is not None]
        loss_record = {
            "train": {"loss": self.steps["loss"], "iter": self.steps["step"]},
            "val": {"loss": [self.epochs["val_loss"][i] for i in ev],
                    "iter": [self.epochs["step"][i] for i in ev]},
        }
        acc_record = {
            "train": {"acc": self.epochs["train_acc"], "iter": self.epochs["epoch"]},
            "val": {"acc": [self.epochs["val_top1"][i] for i in ev],
                    "iter": [self.epochs["epoch"][i] for i in ev]},
        }
        return loss_record, acc_record
