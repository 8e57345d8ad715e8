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
def build_loaders(data_cfg, seed, mode="train", image_size=None):
    """(train_loader or None, eval_loader, train dataset or None, eval dataset), images at ``image_size``
    (``Arch.img_size``). The loaders are ``ppvit.data.loader.SafeLoader``: an image that cannot be loaded mid-run
    is one ``DataError`` on every rank, or skipped with ``Data.skip_bad_images``.

    Evaluation splits the test set across ranks without padding (rank r takes samples r, r+W, ...),
    so the reduced metrics count every sample exactly once.
    """
    from ..data import build_dataset
    from ..data.loader import safe_loader, use_shared_memory

    workers, skip = data_cfg["num_workers"], data_cfg.get("skip_bad_images", False)
    shm = use_shared_memory(data_cfg)  # False (logged) when /dev/shm is too small for the workers
    eval_set = build_dataset(data_cfg, "test", image_size)
    shard = paddle.io.Subset(eval_set, list(range(rank(), len(eval_set), world_size())))
    # a sample that cannot be loaded stops every rank with one DataError (or is skipped), never a hang
    eval_loader = safe_loader(shard, paddle.io.BatchSampler(shard, batch_size=data_cfg["eval_batch_size"]),
                              workers, skip=skip, use_shared_memory=shm)
    if mode != "train":
        return None, eval_loader, None, eval_set
    train_set = SeededSamples(build_dataset(data_cfg, "train", image_size), seed)
    sampler = EpochBatchSampler(train_set, data_cfg["batch_size"], seed, data_cfg["drop_last"],
                                data_cfg.get("repeated_aug") or 1)
    train_loader = safe_loader(train_set, sampler, workers, skip=skip, train=True, persistent_workers=False,
                               use_shared_memory=shm)
    return train_loader, eval_loader, train_set, eval_set


# ----------------------------------------------------------------------------------------------- model
def build_model(cfg, training=True, input_shape=None, weights=True):
    """The config's model with its weights, through the one builder (``build_model_with_cfg``): the model of
    ``Arch.name`` built with ``num_classes=Arch.num_classes`` and the other Arch keys, with the weights of
    ``Global.pretrained_model``; not training and ``weights`` true, the run's best model when that is unset
    (``run_weights``, which is written back to ``Global.pretrained_model``: what was evaluated).

    training: a head trained for another class count is re-initialised (fine-tuning, logged); otherwise (eval,
    export, explain) every key must fit, head included; when training, weights saved for another
    ``Arch.img_size`` have their position tables resampled (logged). weights: False builds without the run's weights when none is given
    (an exported ``Eval.model`` brings its own). input_shape: (C, H, W) of the data; one forward on zeros checks
    that the model takes it (``check_input_size``), before anything is written.

    The Arch keys were checked against the model's signature when the config loaded; a ``ValueError`` the
    model's constructor raises for their values (e.g. an even kernel size) is a ``ConfigError``; weights that
    do not fit are a ``CheckpointError``.
    """
    from ..errors import PpvitError
    from ..models.helpers import build_model_with_cfg
    from .checkpoint import run_weights, weights_fix

    arch, g = cfg["Arch"], cfg["Global"]
    if not training and weights:
        g["pretrained_model"] = run_weights(cfg)
    kwargs = model_kwargs(cfg)
    try:
        model = build_model_with_cfg(
            arch["name"], pretrained=g["pretrained_model"] or None, num_classes=arch["num_classes"],
            reset_head=training, context=" for this config",
            fix=weights_fix(g["pretrained_model"], "check Arch.name and the Arch.* sizes, or the weights file")
            if g["pretrained_model"] else None, **kwargs)
    except PpvitError:
        raise
    except ValueError as e:
        raise ConfigError(f"Arch: model {arch['name']} rejected its arguments "
                          f"{', '.join(f'{k}={v!r}' for k, v in kwargs.items()) or '(none)'}: {e}") from None
    if input_shape is not None:
        check_input_size(model, tuple(input_shape), cfg)
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


