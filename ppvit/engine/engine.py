"""The engine: everything a run needs, assembled from a config in one readable order.

    engine = Engine(load_config("configs/quickstart.yaml"))
    engine.train()
    Engine(cfg, mode="eval")  # data and model only: what ppvit.commands.evaluate runs on

Nothing is written while the engine is built, so any error found here (missing dataset, mismatched
checkpoint, ...) leaves an existing run folder untouched.
"""
import math
import os

import numpy as np
import paddle

from . import checkpoint as ckpt
from .builder import build_device, build_loaders, build_loss, build_model, seed_everything
from .config import ConfigError, run_dir
from .distributed import init_distributed, rank, world_size
from .ema import ModelEMA
from .logger import get_logger
from .optim import build_optimizer, build_scheduler
from .resume import check_run_folder, plan_resume
from .state import TrainState
from .vdl import check_visualdl


class Engine:
    """A run assembled from a validated config (``load_config``): device and processes, seed, data
    (``train_loader``/``eval_loader``), model (+ ``Global.pretrained_model``), loss and, with
    ``mode="train"``, optimizer, per-step schedule, AMP, EMA, resume state and data parallelism.

    Raises ``ConfigError``/``DataError``/``CheckpointError`` (``PpvitError``) for user mistakes, before
    anything is written. ``train()`` runs the loop (``ppvit.engine.trainer``); evaluation of saved weights
    is ``ppvit.commands.evaluate``.
    """

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
        from ..data import data_config

        self.train_loader, self.eval_loader, self.train_set, self.eval_set = build_loaders(
            data_config(cfg), g["seed"], mode, cfg["Arch"]["img_size"])
        self.class_names = list(getattr(self.eval_set, "class_names", None)
                                or [str(i) for i in range(cfg["Arch"]["num_classes"])])
        self._check_class_count()

        # 4. model (+ Global.pretrained_model, else in eval the run's best model; an exported model given as
        # Eval.model brings its own weights); strict outside training: the head must fit too (only fine-tuning
        # re-initialises it); an Arch/Data size mismatch stops here, before any file is written
        from ..data.loader import first_readable

        sample = first_readable(self.eval_set, 1, cfg["Data"].get("skip_bad_images", False))
        self.model = build_model(cfg, training=mode == "train", input_shape=tuple(sample[0][0].shape),
                                 weights=not cfg.get("Eval", {}).get("model"))

        # 5. loss
        self.loss_fn = build_loss(cfg["Loss"])
        self.eval_loss_fn = self.loss_fn

        self.state = None  # the TrainState (training only)
        self.resumed_from = None
        if mode == "train":
            self._build_training()

        # 9. data parallel: gradients are all-reduced across ranks (evaluation reduces its own sums)
        self.train_model = self.model
        if mode == "train" and self.world_size > 1:
            self.train_model = paddle.DataParallel(self.model)

    def _build_training(self):
        cfg, g = self.cfg, self.cfg["Global"]
        from ..data import build_batch_mixer

        self.steps_per_epoch = len(self.train_loader.batch_sampler)
        if g["sync_bn"]:
            if self.device != "gpu":
                raise ConfigError("Global.sync_bn needs GPUs: Paddle's SyncBatchNorm has no CPU kernel. On the CPU, "
                                  "leave it off: the ranks' BatchNorm statistics are averaged before every "
                                  "evaluation and save")
            if self.world_size > 1:  # before the optimizer takes the parameters
                self.model = paddle.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        saved, plan = None, {"lr": None, "extend": None}
        self.restart_leftovers = False
        if g["checkpoints"]:
            # a resume is checked against the saved run before anything is built from it or written
            checkpoint = ckpt.load_latest(g["checkpoints"])
            saved = ckpt.read_train_state(checkpoint)
            folder = os.path.dirname(checkpoint["path"])
            plan = plan_resume(saved, cfg, self.steps_per_epoch, folder)
            # a resume continues in its run's folder, whatever Global.output_dir/run_name say now
            if os.path.abspath(folder) != os.path.abspath(self.run_dir):
                g["output_dir"], g["run_name"] = os.path.dirname(folder) or ".", os.path.basename(folder)
                self.run_dir = run_dir(cfg)
        else:  # True: only an earlier start's files before its first checkpoint, which this run replaces
            self.restart_leftovers = check_run_folder(cfg, self.run_dir)
        self.state = saved or TrainState(cfg, self.steps_per_epoch)
        self.state.config = cfg
        if plan["extend"]:  # Global.extend: the added epochs get a schedule of their own
            self.state.schedule = {"start_epoch": plan["extend"][0], "epochs": plan["extend"][1] - plan["extend"][0]}
        self.resume_plan = plan

        # 6. optimizer and per-step schedule over the run's (or the extension's) optimizer steps: one every
        # Optimizer.grad_accum_steps batches (and at the end of an epoch), on the effective (global) batch
        self.accum_steps = cfg["Optimizer"]["grad_accum_steps"]
        self.global_batch = cfg["Data"]["batch_size"] * self.world_size * self.accum_steps
        self.updates_per_epoch = math.ceil(self.steps_per_epoch / self.accum_steps)
        segment = self.state.schedule
        opt_cfg = cfg["Optimizer"] if segment["start_epoch"] == 0 else dict(cfg["Optimizer"], warmup_epochs=0.0)
        self.scheduler = build_scheduler(opt_cfg, self.updates_per_epoch, segment["epochs"], self.global_batch)
        self.optimizer = build_optimizer(cfg["Optimizer"], self.model, self.scheduler)
        self.mixer = build_batch_mixer(cfg["Data"], cfg["Arch"]["num_classes"])
        if self.mixer is not None:  # its own stream, saved with the checkpoint (the global one is the loader's)
            self.mixer.rng = np.random.RandomState((g["seed"] + 1000 * self.rank) % 2**32)

        # 7. AMP (GPU only) and EMA
        self.use_amp = bool(g["use_amp"]) and self.device == "gpu"
        if g["use_amp"] and not self.use_amp and self.is_main:
            self.logger.warning("Global.use_amp=true is ignored: AMP needs a GPU and this run is on the CPU "
                                "(training in float32)")
        self.scaler = paddle.amp.GradScaler(init_loss_scaling=2.0**16) if self.use_amp else None
        self.ema = ModelEMA(self.model, g["ema_decay"]) if g["ema_decay"] else None
        check_visualdl(g["use_visualdl"])  # optional package: missing is an error before anything is written

        # 8. resume: model, optimizer, scheduler (unless extending), EMA and the random streams
        if saved is not None:
            ckpt.restore(checkpoint, self.model, self.optimizer, self.scheduler, self.ema, self.scaler)
            if plan["extend"]:  # the added epochs start their own schedule at its first step
                self.scheduler.last_epoch = 0
            # the scheduler's saved lr is the old base lr's: recompute it, so a changed Optimizer.lr applies
            # from the first resumed step
            self.scheduler.last_lr = self.scheduler.get_lr()
            self.resumed_from = checkpoint["path"]
            self.state.restore_rng(self.mixer)
            if self.world_size > 1:  # only rank 0's RNG was saved: give each rank its own stream again
                seed_everything(g["seed"] + 1000 * self.rank + self.state.global_step)
        else:
            # each rank draws its own augmentation/dropout randomness
            seed_everything(g["seed"] + 1000 * self.rank)

    # where the run is (the TrainState's), for callers and tests
    @property
    def start_epoch(self):
        return self.state.epoch

    @property
    def start_batch(self):
        return self.state.batch

    @property
    def global_step(self):
        return self.state.global_step

    @property
    def best(self):
        return self.state.best

    @property
    def history(self):
        return self.state.history

    def _check_class_count(self):
        from ..data.folder import check_class_count

        check_class_count(self.cfg, self.class_names)

    def train(self, until_epoch=None):
        """Train to ``Global.epochs`` (or stop after ``until_epoch``); returns the history dict."""
        from .trainer import train

        return train(self, until_epoch)
