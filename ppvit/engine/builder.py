"""Small builders, one per config section: device, seed, data loaders, model (and its input-size check), loss."""
import random

import numpy as np
import paddle
import paddle.distributed as dist

from ..losses import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from ..utils.device import resolve_device
from .config import ConfigError, model_kwargs
from .distributed import rank, world_size
from .sampler import EpochBatchSampler, SeededSamples


# ---------------------------------------------------------------------------------------------- device
def build_device(name):
    """``auto`` is the GPU when Paddle was compiled with CUDA and sees one, else the CPU; under
    ``paddle.distributed.launch`` each rank takes its own GPU. Returns ``"gpu"`` or ``"cpu"``."""
    try:
        kind, _ = resolve_device(name, key="Global.device")
    except ValueError as e:
        raise ConfigError(str(e)) from None
    device = kind
    if device == "gpu" and world_size() > 1:
        device = f"gpu:{dist.ParallelEnv().device_id}"
    paddle.set_device(device)
    return kind


# ------------------------------------------------------------------------------------------------ seed
def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    paddle.seed(seed)


# ------------------------------------------------------------------------------------------------ data
def build_loaders(data_cfg, seed, mode="train"):
    """(train_loader or None, eval_loader, train dataset or None, eval dataset).

    Evaluation splits the test set across ranks without padding (rank r takes samples r, r+W, ...),
    so the reduced metrics count every sample exactly once.
    """
    from ..data import build_dataset
    from ..data.loader import use_shared_memory

    workers = data_cfg["num_workers"]
    shm = use_shared_memory(data_cfg)  # False (logged) when /dev/shm is too small for the workers
    eval_set = build_dataset(data_cfg, "test")
    shard = paddle.io.Subset(eval_set, list(range(rank(), len(eval_set), world_size())))
    eval_loader = paddle.io.DataLoader(
        shard, batch_sampler=paddle.io.BatchSampler(shard, batch_size=data_cfg["eval_batch_size"]),
        num_workers=workers, use_shared_memory=shm)
    if mode != "train":
        return None, eval_loader, None, eval_set
    train_set = SeededSamples(build_dataset(data_cfg, "train"), seed)
    sampler = EpochBatchSampler(train_set, data_cfg["batch_size"], seed, data_cfg["drop_last"],
                                data_cfg.get("repeated_aug") or 1)
    train_loader = paddle.io.DataLoader(train_set, batch_sampler=sampler, num_workers=workers,
                                        persistent_workers=False, use_shared_memory=shm)
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
        load_pretrained(model, weights, reset_head=training, context=" for this config",
                        fix="check Arch.name and the Arch.* sizes, or the weights file")
    return model


@paddle.no_grad()
def check_input_size(model, input_shape, cfg):
    """One eval-mode forward on zeros of ``input_shape`` (C, H, W), so an Arch/Data size mismatch stops with
    a ``ConfigError`` before any file is written (without consuming random numbers)."""
    was_training = model.training
    model.eval()
    try:
        model(paddle.zeros([1, *input_shape]))
    except ValueError as e:
        raise ConfigError(f"the model does not accept the data: {e} (Arch.img_size={cfg['Arch'].get('img_size')} "
                          f"gives inputs of shape {list(input_shape)}; set another with -o Arch.img_size=...)") from None
    finally:
        if was_training:
            model.train()


# ------------------------------------------------------------------------------------------------ loss
def build_loss(loss_cfg):
    """Both losses accept hard labels and MixUp/CutMix soft targets."""
    if loss_cfg["name"] == "LabelSmoothingCrossEntropy":
        return LabelSmoothingCrossEntropy(loss_cfg["smoothing"])
    return SoftTargetCrossEntropy()


