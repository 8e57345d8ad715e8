"""The one state of a training run, what outlives one process: ``TrainState`` owns everything a resume needs
besides the model and optimizer tensors (where the run is, its best metric, its ``History`` of losses and
accuracies, its random streams, the config it runs with and the schedule segment it is on) and is serialised in
one place (``state_dict``/``from_state_dict``, inside ``latest.pdstate``; the history also as ``history.json``).
The rules a resume must follow are in ``engine/resume.py``."""
import random

import numpy as np
import paddle

from ..io import write_json


class History:
    """Loss/lr per step and loss/accuracy per epoch; saved as JSON and kept in the resume state.

    A step's ``lr`` is the one its optimizer step used; an epoch's is that of its last step."""

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


def rng_state():
    return {"python": random.getstate(), "numpy": np.random.get_state(),
            "paddle": [s for s in paddle.get_rng_state()]}


def set_rng_state(state):
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    paddle.set_rng_state(state["paddle"])


class TrainState:
    """Where a run is and what it has done.

    epoch, batch: the resume point (``batch`` batches of epoch ``epoch`` (0-based) are done).
    global_step: batches trained (an optimizer step every ``Optimizer.grad_accum_steps`` of them and at each
    epoch's end). steps_per_epoch: batches per epoch (fixed by data, batch, ranks).
    best: {"top1", "epoch"} of the best validation so far. history: per-step and per-epoch records.
    epoch_sums: the running sums of a half-done epoch. config: the config the run runs with.
    schedule: {"start_epoch", "epochs"}, the schedule segment the run is on: the whole run, or the epochs
    added by ``Global.extend``. mixer_rng: the MixUp/CutMix stream; rng: python/numpy/paddle streams.
    last_saved: (epoch, batch, global_step) of the last ``latest`` checkpoint of this process (not saved).
    """

    def __init__(self, config, steps_per_epoch):
        self.epoch, self.batch, self.global_step = 0, 0, 0
        self.steps_per_epoch = steps_per_epoch
        self.best = {"top1": None, "epoch": None}
        self.history = History()
        self.epoch_sums = None
        self.config = config
        self.schedule = {"start_epoch": 0, "epochs": config["Global"]["epochs"]}
        self.mixer_rng = None
        self.rng = None
        self.path = None  # the checkpoint this state was read from
        self.last_saved = None

    @property
    def finished(self):
        return self.epoch >= self.config["Global"]["epochs"] and self.batch == 0

    def state_dict(self, mixer=None):
        """Everything, for ``latest.pdstate``; the random streams are read now."""
        return {
            "epoch": self.epoch, "batch": self.batch, "global_step": self.global_step,
            "steps_per_epoch": self.steps_per_epoch, "best": dict(self.best), "history": self.history.state_dict(),
            "epoch_sums": self.epoch_sums, "config": self.config, "schedule": dict(self.schedule),
            "mixer_rng": mixer.rng.get_state() if mixer is not None else None, "rng": rng_state(),
        }

    @classmethod
    def from_state_dict(cls, meta, path=None):
        """A state read from a checkpoint's ``meta``."""
        state = cls(meta["config"], meta["steps_per_epoch"])
        state.epoch, state.batch, state.global_step = meta["epoch"], meta["batch"], meta["global_step"]
        state.best = dict(meta["best"])
        state.history = History(meta["history"])
        state.epoch_sums = meta.get("epoch_sums")
        state.schedule = dict(meta.get("schedule") or {"start_epoch": 0, "epochs": meta["config"]["Global"]["epochs"]})
        state.mixer_rng = meta.get("mixer_rng")
        state.rng = meta.get("rng")
        state.path = path
        return state

    def restore_rng(self, mixer=None):
        if self.rng is not None:
            set_rng_state(self.rng)
        if mixer is not None and self.mixer_rng is not None:
            mixer.rng.set_state(self.mixer_rng)
