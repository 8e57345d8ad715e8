"""A CPU run's peak memory, estimated before it trains: one forward/backward at batch 1 and one at batch 2 give
the tensor memory a step needs beside its batch and the memory each image adds (Paddle's host memory
statistics); with the optimizer's moments and the process's resident memory this is scaled to
``Data.batch_size`` and compared with the RAM the system has available (``MemAvailable``), so that a run that
would swap or be killed is announced, with the batch size that fits, before it starts (Linux: read from
``/proc``; elsewhere no estimate).
"""
import os
import time

import numpy as np
import paddle

GIB = 1024 ** 3


def rss_bytes():
    """This process's resident memory in bytes (``/proc/self/statm``), or None where there is no /proc."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def available_ram():
    """``MemAvailable`` in bytes (what can be allocated without swapping), or None where it is not known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _host_stat(kind):
    from paddle.base import core

    return getattr(core, f"host_memory_stat_{kind}")


def tensor_bytes_now():
    """Bytes of Paddle's CPU tensors allocated now (Paddle's host memory statistics)."""
    return int(_host_stat("current_value")("Allocated", 0))


class PeakTensorBytes:
    """The most bytes of CPU tensors allocated at once while the block runs, above what was allocated when it
    began (``extra``): Paddle's own count, which the C library's caching of freed memory does not blur."""

    def __enter__(self):
        _host_stat("reset_peak_value")("Allocated", 0)
        self.start = tensor_bytes_now()
        return self

    def __exit__(self, *exc):
        self.extra = int(_host_stat("peak_value")("Allocated", 0)) - self.start
        return False


def _probe(model, loss_fn, input_shape, batch):
    """Extra tensor bytes at the peak of one forward/backward at ``batch`` (eval mode: no random numbers drawn,
    no BatchNorm statistics updated; the gradients are cleared after)."""
    images = paddle.zeros([batch, *input_shape])
    labels = paddle.zeros([batch], dtype="int64")
    with PeakTensorBytes() as peak:
        loss = loss_fn(model(images), labels)
        loss.backward()
        del loss
    model.clear_gradients(set_to_zero=False)
    return peak.extra


def estimate_peak(model, loss_fn, input_shape, batch_size, optimizer_slots=2):
    """``{"peak", "fixed", "per_image", "rss"}`` in bytes: the estimated peak resident memory of training at
    ``batch_size``; the part that does not grow with the batch (the process as it is now, ``rss``, plus the
    gradients and ``optimizer_slots`` optimizer tensors per parameter, e.g. Adam's 2 moments); and what each image
    of a batch adds (activations kept for the backward pass). None where the process's memory cannot be read.
    ``input_shape``: one image's (C, H, W)."""
    rss = rss_bytes()
    if rss is None:
        return None
    try:
        _host_stat("peak_value")
    except AttributeError:  # a Paddle build without host memory statistics
        return None
    was_training = model.training
    model.eval()
    try:
        one = _probe(model, loss_fn, input_shape, 1)
        two = _probe(model, loss_fn, input_shape, 2)
    finally:
        if was_training:
            model.train()
    per_image = max(two - one, 0)
    param_bytes = sum(int(np.prod(p.shape)) * p.element_size() for p in model.parameters())
    fixed = rss + max(one - per_image, 0) + optimizer_slots * param_bytes
    return {"peak": fixed + per_image * batch_size, "fixed": fixed, "per_image": per_image, "rss": rss}


def memory_warning(estimate, batch_size, available):
    """The warning line when ``estimate`` (``estimate_peak``) exceeds ``available`` bytes, else None."""
    if estimate is None or available is None or estimate["peak"] <= available:
        return None
    need = f"about {estimate['peak'] / GIB:.1f} GiB"
    have = f"{available / GIB:.1f} GiB"
    fits = int((available - estimate["fixed"]) // estimate["per_image"]) if estimate["per_image"] else 0
    advice = (f"Data.batch_size={fits} would fit (-o Data.batch_size={fits})" if fits >= 1 else
              "even batch 1 may not fit: a smaller Arch.img_size or model would")
    return (f"memory: training at batch {batch_size} needs {need} at its peak (estimated from one forward/backward "
            f"at batch 1 and 2), more than the {have} of RAM available; it may swap or be killed. {advice}")


def check_memory(engine, log):
    """Before a CPU run trains: estimate its peak memory and warn (one line) when it exceeds the available RAM.
    The estimate is logged to train.log either way. Does nothing on a GPU or where /proc is missing."""
    if engine.device != "cpu":
        return None
    batch = engine.cfg["Data"]["batch_size"]
    slots = {"Adam": 2, "AdamW": 2, "SGD": 1}.get(engine.cfg["Optimizer"]["name"], 2)
    started = time.perf_counter()
    # an evaluation image: its transform draws no random numbers (a training image's may)
    estimate = estimate_peak(engine.model, engine.loss_fn, tuple(engine.eval_set[0][0].shape), batch, slots)
    if estimate is None:
        return None
    available = available_ram()
    log.debug(f"memory estimate: peak {estimate['peak'] / GIB:.2f} GiB at batch {batch} ({estimate['fixed'] / GIB:.2f} "
              f"GiB + {estimate['per_image'] / 2**20:.1f} MiB per image); available "
              f"{'unknown' if available is None else f'{available / GIB:.2f} GiB'}; "
              f"{time.perf_counter() - started:.1f}s to estimate")
    warning = memory_warning(estimate, batch, available)
    if warning:
        log.warning(warning)
    return warning
