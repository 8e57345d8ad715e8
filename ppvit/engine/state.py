"""The state of a training run that outlives one process: the history of losses and accuracies (saved as
``history.json`` and inside the ``latest`` checkpoint for resume)."""
from ..io import write_json


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
        write_json(path, dict(extra or {}, **self.state_dict()))

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
