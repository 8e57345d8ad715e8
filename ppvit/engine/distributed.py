"""Processes started by ``paddle.distributed.launch``: world size, rank, init, the metric all-reduce, and one
model state across ranks.

Data-parallel state is one state: parameters stay identical across ranks (gradients are all-reduced), but
running statistics (BatchNorm's mean and variance, which Paddle keeps as non-trainable parameters, and any
buffer) follow each rank's own batches. ``sync_buffers`` averages them across ranks before the model is
evaluated or saved (timm's ``distribute_bn(reduce=True)``), so every rank evaluates, and rank 0 saves, the same
model, and the validation a run logs is what tools/eval.py gets from its saved weights."""
import os

import numpy as np
import paddle
import paddle.distributed as dist


def world_size():
    """Processes started by ``paddle.distributed.launch`` (1 when run directly)."""
    return int(os.environ.get("PADDLE_TRAINERS_NUM", "1"))


def rank():
    return int(os.environ.get("PADDLE_TRAINER_ID", "0"))


def init_distributed():
    if world_size() > 1 and not dist.is_initialized():
        from ..utils.quiet import without_paddle_notices

        without_paddle_notices(dist.init_parallel_env)  # without its "Modified FLAGS detected" block


def all_reduce_sum(values):
    """Sum a float64 numpy array across ranks (identity in a single process)."""
    values = np.asarray(values, dtype=np.float64)
    if world_size() == 1:
        return values
    t = paddle.to_tensor(values)
    dist.all_reduce(t)
    return t.numpy()


def running_statistics(model):
    """(name, tensor) of what training changes without gradients: buffers, and the non-trainable parameters
    Paddle keeps BatchNorm's ``_mean``/``_variance`` in; floating point only, in name order."""
    found = dict(model.named_buffers())
    found.update((n, p) for n, p in model.named_parameters() if p.stop_gradient)
    return [(n, t) for n, t in sorted(found.items()) if paddle.is_floating_point(t)]


@paddle.no_grad()
def sync_buffers(*models):
    """Average the running statistics of ``models`` across ranks, in place (no-op in one process).
    Trainable parameters are already identical (their gradients are all-reduced)."""
    n = world_size()
    if n == 1:
        return
    for model in models:
        if model is None:
            continue
        for _, value in running_statistics(model):
            dist.all_reduce(value)
            paddle.assign(value / n, value)


def non_finite_tensors(*models):
    """Names of the parameters and buffers of ``models`` holding NaN or an infinity."""
    bad = []
    for model in models:
        if model is None:
            continue
        for name, value in model.state_dict().items():
            array = value.numpy() if hasattr(value, "numpy") else np.asarray(value)
            if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
                bad.append(name)
    return bad
