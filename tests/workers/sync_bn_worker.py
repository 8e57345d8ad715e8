"""Run by tests/test_feature_guards.py under ``paddle.distributed.launch --nproc_per_node 2``: each rank gives a
BatchNorm model its own running statistics, writes them, calls ``sync_buffers`` and writes the result."""
import os
import sys

import numpy as np
import paddle

from ppvit.engine.distributed import init_distributed, rank, running_statistics, sync_buffers

out = sys.argv[1]
paddle.set_device("cpu")
init_distributed()
r = rank()
model = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 1), paddle.nn.BatchNorm2D(4), paddle.nn.BatchNorm2D(4))
rng = np.random.default_rng(100 + r)
for _, t in running_statistics(model):
    t.set_value(rng.uniform(0.5, 2.0, t.shape).astype("float32"))
before = {n: t.numpy().copy() for n, t in running_statistics(model)}
sync_buffers(model)
after = {n: t.numpy().copy() for n, t in running_statistics(model)}
np.savez(os.path.join(out, f"rank{r}.npz"), **{f"before/{n}": v for n, v in before.items()},
         **{f"after/{n}": v for n, v in after.items()})
