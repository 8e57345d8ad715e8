"""The one state of a training run, what outlives one process: ``TrainState`` owns everything a resume needs
besides the model and optimizer tensors (where the run is, its best metric, its ``History`` of losses and
accuracies, its random streams, the config it runs with and the schedule segment it is on) and is serialised in
one place (``state_dict``/``from_state_dict``, inside ``latest.pdstate``). The per-epoch history is kept there
and in ``history.json``; the per-step records (one per optimizer step, millions in a long run) only in
``history_steps.jsonl``, which is appended to, never rewritten, and read back on resume. The rules a resume
must follow are in ``engine/resume.py``."""
import json
import os
import random

import numpy as np
import paddle

from ..io import write_json
from .runfiles import run_file


STEPS_FILE = run_file("history_steps.jsonl", training=True)
HISTORY_FILE = run_file("history.json", training=True)


class History:
    """Loss/lr per step and loss/accuracy per epoch.

    A step's ``lr`` is the one its optimizer step used; an epoch's is that of its last step. The epochs go into
    ``latest.pdstate`` (``epochs_state``) and ``history.json`` (``save``); the steps are appended to
    ``history_steps.jsonl`` (one JSON object per line) at each checkpoint (``flush_steps``), and read back up
    to a checkpoint's step on resume (``read_steps``)."""

    STEP_KEYS = ("step", "epoch", "loss", "lr")
    EPOCH_KEYS = ("epoch", "step", "lr", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5",
                  "val_top1_raw", "time", "images_per_sec")

    def __init__(self, state=None):
        self.steps = {k: [] for k in self.STEP_KEYS}
        self.epochs = {k: [] for k in self.EPOCH_KEYS}
        self._unflushed = 0  # the last steps not yet appended to the steps file
        self._keep_bytes = None if state else 0  # cut the steps file to this length before appending
        if state:
            for k in self.STEP_KEYS:
                self.steps[k] = list((state.get("steps") or {}).get(k, []))
            n = len(state["epochs"]["epoch"])
            for k in self.EPOCH_KEYS:
                self.epochs[k] = list(state["epochs"].get(k, [None] * n))

    def add_step(self, **values):
        for k in self.STEP_KEYS:
            self.steps[k].append(values[k])
        self._unflushed += 1

    def add_epoch(self, **values):
        for k in self.EPOCH_KEYS:
            self.epochs[k].append(values.get(k))

    def state_dict(self):
        """Steps and epochs (what ``Engine.train`` returns)."""
        return {"steps": {k: list(v) for k, v in self.steps.items()},
                "epochs": {k: list(v) for k, v in self.epochs.items()}}

    def epochs_state(self):
        """The per-epoch records only (for ``latest.pdstate``)."""
        return {"epochs": {k: list(v) for k, v in self.epochs.items()}}

    def save(self, path, extra=None):
        """``history.json``: the per-epoch records (+ ``extra``) and the name of the steps file beside it."""
        write_json(path, dict(extra or {}, epochs=self.epochs, steps_file=STEPS_FILE))

    def flush_steps(self, path):
        """Append the steps recorded since the last call to the JSON-lines file ``path`` (synced to disk), after
        cutting the lines a stopped run wrote past its checkpoint (``read_steps``)."""
        if self._keep_bytes is not None:
            if os.path.isfile(path):
                os.truncate(path, self._keep_bytes)
            self._keep_bytes = None
        if not self._unflushed:
            return
        rows = zip(*(self.steps[k][-self._unflushed:] for k in self.STEP_KEYS))
        text = "".join(json.dumps(dict(zip(self.STEP_KEYS, row))) + "\n" for row in rows)
        with open(path, "a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self._unflushed = 0

    def read_steps(self, path, upto_step):
        """Load the steps of ``path`` up to global step ``upto_step`` (a checkpoint's). Lines written after that
        checkpoint (a run stopped before its next one, or a line cut short) are left out, and cut from the file
        by the next ``flush_steps``, so that the resumed run appends its own; nothing is written here. A missing
        file gives no steps."""
        self.steps = {k: [] for k in self.STEP_KEYS}
        self._unflushed, self._keep_bytes = 0, None
        if not os.path.isfile(path):
            return
        kept = 0
        with open(path, "rb") as f:
            for line in f:
                try:
                    row = json.loads(line) if line.endswith(b"\n") else None
                except ValueError:
                    row = None
                if row is None or row["step"] > upto_step:
                    self._keep_bytes = kept
                    break
                kept += len(line)
                for k in self.STEP_KEYS:
                    self.steps[k].append(row[k])

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


def read_history(run):
    """A run folder's whole history, ``{"steps": {...}, "epochs": {...}, "best": ..., "run": ...}``:
    ``history.json`` with the steps of ``history_steps.jsonl`` (up to the last epoch it records). Raises
    ``FileNotFoundError`` when the run has no ``history.json``."""
    with open(os.path.join(run, HISTORY_FILE), encoding="utf-8") as f:
        saved = json.load(f)
    history = History({"epochs": saved["epochs"]})
    last = saved["epochs"]["step"][-1] if saved["epochs"]["step"] else 0
    history.read_steps(os.path.join(run, saved.get("steps_file", STEPS_FILE)), last)
    return dict(saved, **history.state_dict())


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
    pending: True between a commit of ``latest`` and the last file that follows from it (not saved).
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
        self.pending = False

    @property
    def finished(self):
        return self.epoch >= self.config["Global"]["epochs"] and self.batch == 0

    def state_dict(self, mixer=None):
        """Everything, for ``latest.pdstate``; the random streams are read now."""
        return {
            "epoch": self.epoch, "batch": self.batch, "global_step": self.global_step,
            "steps_per_epoch": self.steps_per_epoch, "best": dict(self.best), "history": self.history.epochs_state(),
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
