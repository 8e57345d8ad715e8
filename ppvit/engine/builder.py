"""Small builders, one per config section: device, seed, data loaders, model, loss, EMA."""
import copy
import os
import random

import numpy as np
import paddle
import paddle.distributed as dist

from ..losses import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from .config import ConfigError, model_kwargs


# ---------------------------------------------------------------------------------------------- device
def build_device(name):
    """``auto`` is the GPU when Paddle was compiled with CUDA and sees one, else the CPU."""
    has_gpu = paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if name == "gpu" and not has_gpu:
        raise ConfigError("Global.device is gpu, but this Paddle has no usable GPU (compiled with CUDA: "
                          f"{paddle.device.is_compiled_with_cuda()}); use Global.device=cpu or auto")
    device = "gpu" if name == "gpu" or (name == "auto" and has_gpu) else "cpu"
    if device == "gpu" and world_size() > 1:
        device = f"gpu:{dist.ParallelEnv().device_id}"
    paddle.set_device(device)
    return device.split(":")[0]


# ----------------------------------------------------------------------------------------- distributed
def world_size():
    """Processes started by ``paddle.distributed.launch`` (1 when run directly)."""
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def rank():
    return int(os.environ.get("PADDLE_TRAINER_ID", "0"))


def init_distributed():
    if world_size() > 1 and not dist.is_initialized():
        dist.init_parallel_env()


def all_reduce_sum(values):
    """Sum a float64 numpy array across ranks (identity in a single process)."""
    values = np.asarray(values, dtype=np.float64)
    if world_size() == 1:
        return values
    t = paddle.to_tensor(values)
    dist.all_reduce(t)
    return t.numpy()


# ------------------------------------------------------------------------------------------------ seed
def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    paddle.seed(seed)


# ------------------------------------------------------------------------------------------------ data
class EpochBatchSampler(paddle.io.DistributedBatchSampler):
    """The training batch sampler, single- or multi-process.

    The shuffle of epoch ``e`` is a function of ``(seed, e)`` only, and ``start_batch`` skips the batches
    a resumed run has already trained on, so a run resumed mid-epoch sees exactly the remaining batches.
    """

    def __init__(self, dataset, batch_size, seed, drop_last):
        n = len(dataset)
        # too few samples for one full batch (smoke runs on Data.limit): keep the partial batch
        drop_last = drop_last and n >= batch_size * world_size()
        super().__init__(dataset, batch_size, num_replicas=world_size(), rank=rank(), shuffle=True,
                         drop_last=drop_last)
        self.seed = seed
        self.start_batch = 0

    def set_epoch(self, epoch, start_batch=0):
        super().set_epoch((self.seed * 100003 + epoch) % 2**32)
        self.start_batch = start_batch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self):
        for i, batch in enumerate(super().__iter__()):
            if i >= self.start_batch:
                yield batch


class SeededSamples(paddle.io.Dataset):
    """Training samples whose random augmentation is a function of ``(seed, epoch, index)`` only.

    Paddle's loader prepares batches ahead of the training step (a thread, or worker processes), so the
    global python/numpy RNG state at any step boundary says nothing about the augmentations still to come.
    Re-seeding before every sample makes them reproducible: a run resumed mid-epoch, or run with another
    ``num_workers``, augments every image exactly as the uninterrupted run did.
    """

    def __init__(self, dataset, seed):
        self.dataset, self.seed, self.epoch = dataset, seed, 0
        self.class_names = getattr(dataset, "class_names", None)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        state = np.random.SeedSequence([self.seed % 2**32, self.epoch, int(index)]).generate_state(2)
        random.seed(int(state[0]))
        np.random.seed(int(state[1]))
        return self.dataset[index]


def build_loaders(data_cfg, seed, mode="train"):
    """(train_loader or None, eval_loader, train dataset or None, eval dataset).

    Evaluation splits the test set across ranks without padding (rank r takes samples r, r+W, ...),
    so the reduced metrics count every sample exactly once.
    """
    from ..data import build_dataset

    workers = data_cfg["num_workers"]
    eval_set = build_dataset(data_cfg, "test")
    shard = paddle.io.Subset(eval_set, list(range(rank(), len(eval_set), world_size())))
    eval_loader = paddle.io.DataLoader(
        shard, batch_sampler=paddle.io.BatchSampler(shard, batch_size=data_cfg["eval_batch_size"]),
        num_workers=workers)
    if mode != "train":
        return None, eval_loader, None, eval_set
    train_set = SeededSamples(build_dataset(data_cfg, "train"), seed)
    sampler = EpochBatchSampler(train_set, data_cfg["batch_size"], seed, data_cfg["drop_last"])
    train_loader = paddle.io.DataLoader(train_set, batch_sampler=sampler, num_workers=workers,
                                        persistent_workers=False)
    return train_loader, eval_loader, train_set, eval_set


# ----------------------------------------------------------------------------------------------- model
def build_model(cfg, training=True):
    """``create_model(Arch.name, num_classes=Arch.num_classes, **other Arch keys)`` with
    ``Global.pretrained_model``'s weights: for training, a head trained for another class count is
    re-initialised (fine-tuning, logged); otherwise (eval, export, explain) every key must fit, head included.

    The Arch keys were checked against the model's signature when the config loaded; a ``ValueError`` the
    model's constructor raises for their values (e.g. an even kernel size) is a ``ConfigError``.
    """
    from ..models import create_model
    from ..models.helpers import load_pretrained

    arch = cfg["Arch"]
    kwargs = model_kwargs(cfg)
    try:
        model = create_model(arch["name"], num_classes=arch["num_classes"], **kwargs)
    except ValueError as e:
        raise ConfigError(f"Arch: model {arch['name']} rejected its arguments "
                          f"{', '.join(f'{k}={v!r}' for k, v in kwargs.items()) or '(none)'}: {e}") from None
    weights = cfg["Global"]["pretrained_model"]
    if weights:
        load_pretrained(model, weights, reset_head=training)
    return model


# ------------------------------------------------------------------------------------------------ loss
def build_loss(loss_cfg):
    """Both losses accept hard labels and MixUp/CutMix soft targets."""
    if loss_cfg["name"] == "LabelSmoothingCrossEntropy":
        return LabelSmoothingCrossEntropy(loss_cfg["smoothing"])
    return SoftTargetCrossEntropy()


# ------------------------------------------------------------------------------------------------- EMA
class ModelEMA:
    """Exponential moving average of a model's weights (buffers are copied): ``ema = d*ema + (1-d)*w``."""

    def __init__(self, model, decay):
        self.decay = decay
        self.module = copy.deepcopy(model)
        self.module.eval()
        for p in self.module.parameters():
            p.stop_gradient = True

    @paddle.no_grad()
    def update(self, model):
        own = dict(self.module.named_parameters())
        for name, p in model.named_parameters():
            e = own[name]
            paddle.assign(e * self.decay + p.detach() * (1.0 - self.decay), e)
        own_buffers = dict(self.module.named_buffers())
        for name, b in model.named_buffers():
            if name in own_buffers:
                paddle.assign(b, own_buffers[name])

    def state_dict(self):
        return self.module.state_dict()

    def set_state_dict(self, state):
        self.module.set_state_dict(state)
