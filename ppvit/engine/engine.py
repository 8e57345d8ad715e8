"""The engine: everything a run needs, assembled from a config in one readable order.

    engine = Engine(load_config("configs/quickstart.yaml"))
    engine.train()
    Engine(cfg, mode="eval")  # data and model only: what ppvit.commands.evaluate runs on

Nothing is written while the engine is built, so any error found here (missing dataset, mismatched
checkpoint, ...) leaves an existing run folder untouched.
"""

import numpy as np
import paddle

from ..io import CheckpointError
from . import checkpoint as ckpt
from .builder import build_device, build_loaders, build_loss, build_model, check_input_size, seed_everything
from .config import ConfigError, run_dir
from .distributed import init_distributed, rank, world_size
from .ema import ModelEMA
from .logger import get_logger
from .state import History
from .optim import build_optimizer, build_scheduler
from .vdl import check_visualdl


class Engine:
    def __init__(self, cfg, mode="train"):
        if mode not in ("train", "eval"):
            raise ValueError(f"mode must be 'train' or 'eval', got {mode!r}")
        self.cfg, self.mode = cfg, mode
        g = cfg["Global"]
        self.run_dir = run_dir(cfg)
        self.logger = get_logger()

        # 1. device and processes
        self.device = build_device(g["device"])
        init_distributed()
        self.rank, self.world_size = rank(), world_size()
        self.is_main = self.rank == 0

        # 2. seed (the model's initial weights are the same on every rank)
        seed_everything(g["seed"])

        # 3. data
        self.train_loader, self.eval_loader, self.train_set, self.eval_set = build_loaders(
            cfg["Data"], g["seed"], mode)
        self.class_names = list(getattr(self.eval_set, "class_names", None)
                                or [str(i) for i in range(cfg["Arch"]["num_classes"])])
        self._check_class_count()

        # 4. model (+ Global.pretrained_model)
        # (an exported model given as Eval.model brings its own weights)
        if mode == "eval" and not g["pretrained_model"] and not cfg.get("Eval", {}).get("model"):
            g["pretrained_model"] = ckpt.run_weights(cfg)
        self.model = build_model(cfg)
        # an Arch/Data size mismatch stops here, before any file is written
        check_input_size(self.model, tuple(self.eval_set[0][0].shape), cfg)

        # 5. loss
        self.loss_fn = build_loss(cfg["Loss"])
        self.eval_loss_fn = self.loss_fn

        self.history = History()
        self.start_epoch, self.start_batch, self.global_step = 0, 0, 0
        self.best = {"top1": None, "epoch": None}
        self.resume_meta = None
        if mode == "train":
            self._build_training()

        # 9. data parallel: gradients are all-reduced across ranks (evaluation reduces its own sums)
        self.train_model = self.model
        if mode == "train" and self.world_size > 1:
            self.train_model = paddle.DataParallel(self.model)

    def _build_training(self):
        cfg, g = self.cfg, self.cfg["Global"]
        from ..data import build_batch_mixer

        # 6. optimizer and per-step schedule (T_max = steps_per_epoch * epochs)
        self.steps_per_epoch = len(self.train_loader.batch_sampler)
        self.scheduler = build_scheduler(cfg["Optimizer"], self.steps_per_epoch, g["epochs"])
        self.optimizer = build_optimizer(cfg["Optimizer"], self.model, self.scheduler)
        self.mixer = build_batch_mixer(cfg["Data"], cfg["Arch"]["num_classes"])
        if self.mixer is not None:  # its own stream, saved with the checkpoint (the global one is the loader's)
            self.mixer.rng = np.random.RandomState((g["seed"] + 1000 * self.rank) % 2**32)

        # 7. AMP (GPU only) and EMA
        self.use_amp = bool(g["use_amp"]) and self.device == "gpu"
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=2.0**16) if self.use_amp else None
        self.ema = ModelEMA(self.model, g["ema_decay"]) if g["ema_decay"] else None
        check_visualdl(g["use_visualdl"])  # optional package: missing is an error before anything is written

        # 8. resume: model, optimizer, scheduler, step, best metric, history and RNG state
        if g["checkpoints"]:
            state = ckpt.load_latest(g["checkpoints"])
            meta = ckpt.restore(state, self.model, self.optimizer, self.scheduler, self.ema)
            if meta["steps_per_epoch"] != self.steps_per_epoch:
                raise CheckpointError(
                    f"{state['path']} was trained with {meta['steps_per_epoch']} steps per epoch, this config "
                    f"gives {self.steps_per_epoch}: resume with the run's Data.batch_size and Data.limit")
            self.resume_meta = dict(meta, path=state["path"])
            self.start_epoch, self.start_batch = meta["epoch"], meta["batch"]
            self.global_step = meta["global_step"]
            self.best = dict(meta["best"])
            self.history = History(meta["history"])
            if self.mixer is not None and meta.get("mixer_rng") is not None:
                self.mixer.rng.set_state(meta["mixer_rng"])
            if self.world_size > 1:  # only rank 0's RNG was saved: give each rank its own stream again
                seed_everything(g["seed"] + 1000 * self.rank + self.global_step)
        else:
            # each rank draws its own augmentation/dropout randomness
            seed_everything(g["seed"] + 1000 * self.rank)

    def _check_class_count(self):
        n = self.cfg["Arch"]["num_classes"]
        if len(self.class_names) > n:
            raise ConfigError(f"Arch.num_classes is {n}, but Data.dataset {self.cfg['Data']['dataset']} has "
                              f"{len(self.class_names)} classes")

    def train(self, until_epoch=None):
        """Train to ``Global.epochs`` (or stop after ``until_epoch``); returns the history dict."""
        from .trainer import train

        return train(self, until_epoch)
