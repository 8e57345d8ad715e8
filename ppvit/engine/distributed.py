"""Processes started by ``paddle.distributed.launch``: world size, rank, init and the metric all-reduce."""
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
        dist.init_parallel_env()


def all_reduce_sum(values):
    """Sum a float64 numpy array across ranks (identity in a single process)."""
    values = np.asarray(values, dtype=np.float64)
    if world_size() == 1:
        return values
    t = paddle.to_tensor(values)
    dist.all_reduce(t)
    return t.numpy()
