"""Data-parallel state is one state: parameters stay identical across ranks (gradients are all-reduced), but
buffers such as BatchNorm's running mean and variance follow each rank's own batches. Before the model is
evaluated or saved they are averaged over the ranks (timm's ``distribute_bn(reduce=True)``), so every rank
evaluates, and rank 0 saves, the same model; the validation a run logs is then what tools/eval.py gets from
its saved weights."""
import numpy as np
import paddle
import paddle.distributed as dist

from .builder import world_size

_FLOATS = (paddle.float16, paddle.bfloat16, paddle.float32, paddle.float64)


@paddle.no_grad()
def sync_buffers(*models):
    """Average every floating-point buffer of ``models`` across ranks, in place (no-op in one process).
    Integer buffers (index tables) are the same on every rank and are left alone."""
    n = world_size()
    if n == 1:
        return
    for model in models:
        if model is None:
            continue
        for _, buf in sorted(model.named_buffers(), key=lambda item: item[0]):
            if buf.dtype in _FLOATS:
                dist.all_reduce(buf)
                paddle.assign(buf / n, buf)


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
