"""Time and peak memory of ppvit's GPSA against the ConViT notebook's formulation, in one run.

The notebook (source 002) projects ``rel_indices.expand([B, N, N, 3])`` with ``pos_proj`` and takes
its softmax for every sample; ppvit does it once per forward ([1, heads, N, N]) and broadcasts. Both layers
get the same weights, and the script first checks that their outputs agree.

    python benchmarks/bench_convit_gpsa.py     # the rows of docs/benchmarks.md: convit_tiny and convit_base GPSA, whole
                                               # convit_tiny; 224x224, batch 8
    python benchmarks/bench_convit_gpsa.py --variants base -b 32 --iters 20 --device gpu --no-model

It ends with a markdown table (docs/benchmarks.md's): times are medians, "speed-up" is notebook time / ppvit time
and "memory" ppvit's peak / the notebook's (below 1: ppvit needs less).

Peak memory is Paddle's own allocator statistic: on CPU the host allocator's peak of allocated bytes
(``core.host_memory_stat_peak_value``), on GPU ``paddle.device.cuda.max_memory_allocated``; it is the
peak above what was allocated before the measured step (weights and input excluded).
"""
from ppvit.utils import quiet_paddle_import

# OMP_NUM_THREADS = the cores (Paddle's CPU kernels use one thread otherwise) and Paddle's import notices
# filtered, as the tools do; before anything imports paddle
quiet_paddle_import()

import argparse
import os
import statistics
import time

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from notebook_reference import load_notebook

import ppvit
from ppvit.models.convit import GPSA
from ppvit.utils.device import resolve_device

nb = load_notebook("nb002_convit")

HEADS = {"tiny": 4, "small": 9, "base": 16}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-b", "--batch-size", type=int, default=8)
    p.add_argument("--iters", type=int, default=5, help="timed iterations (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--variants", nargs="+", choices=sorted(HEADS), default=["tiny", "base"],
                   help="GPSA layers of convit_<variant> (width, heads) to compare")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--patch-size", type=int, default=16)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--model", default="tiny", choices=sorted(HEADS), help="whole convit_<model> to compare")
    p.add_argument("--no-model", action="store_true", help="skip the whole-model comparison")
    return p.parse_args(argv)


class Meter:
    """Peak allocated bytes above the level at reset, for the active device."""

    def __init__(self, gpu):
        self.gpu = gpu
        from paddle.base import core
        self.core = core

    def sync(self):
        if self.gpu:
            paddle.device.cuda.synchronize()

    def reset(self):
        self.sync()
        if self.gpu:
            paddle.device.cuda.reset_max_memory_allocated()
            self.base = paddle.device.cuda.memory_allocated()
        else:
            self.core.host_memory_stat_reset_peak_value("Allocated", 0)
            self.base = self.core.host_memory_stat_current_value("Allocated", 0)

    def peak(self):
        self.sync()
        if self.gpu:
            top = paddle.device.cuda.max_memory_allocated()
        else:
            top = self.core.host_memory_stat_peak_value("Allocated", 0)
        return top - self.base


def forward_only(layer, x):
    layer.eval()
    with paddle.no_grad():
        return layer(x)


def forward_backward(layer, x):
    layer.train()
    out = layer(x)
    out.mean().backward()
    layer.clear_gradients()
    return out


def timed(fn, layer, x, meter):
    meter.sync()
    t0 = time.perf_counter()
    fn(layer, x)
    meter.sync()
    return time.perf_counter() - t0


def peak_bytes(fn, layer, x, meter):
    meter.reset()
    fn(layer, x)
    return meter.peak()


def compare(title, ours, theirs, x, meter, args, rows):
    """Time and peak memory of forward and forward+backward; appends one table row per pass to ``rows``."""
    ours.eval(), theirs.eval()
    with paddle.no_grad():
        diff = float(np.abs(ours(x).numpy() - theirs(x).numpy()).max())
    print(f"\n{title}: input {list(x.shape)}, max |ppvit - notebook| = {diff:.2e}")
    print(f"{'':26s}{'notebook':>10s}{'ppvit':>10s}{'speed-up':>10s}{'memory':>8s}")
    for label, fn in (("forward", forward_only), ("forward + backward", forward_backward)):
        for _ in range(args.warmup):
            fn(ours, x), fn(theirs, x)
        # alternate the two so that load from other processes hits both alike
        t_o, t_t = [], []
        for _ in range(args.iters):
            t_o.append(timed(fn, ours, x, meter))
            t_t.append(timed(fn, theirs, x, meter))
        t_o, t_t = statistics.median(t_o), statistics.median(t_t)
        m_o, m_t = peak_bytes(fn, ours, x, meter), peak_bytes(fn, theirs, x, meter)
        speedup, memory = t_t / t_o, m_o / max(m_t, 1)  # notebook/ppvit time; ppvit/notebook memory
        print(f"{label + ' ms':26s}{t_t * 1e3:10.1f}{t_o * 1e3:10.1f}{speedup:9.2f}x")
        print(f"{label + ' peak MiB':26s}{m_t / 2**20:10.1f}{m_o / 2**20:10.1f}{'':10s}{memory:7.2f}x")
        rows.append(f"| {title}, {label} | {_fmt(t_t, m_t)} | {_fmt(t_o, m_o)} | {speedup:.2f}x | {memory:.2f}x |")
    return diff


def _fmt(seconds, peak):
    time_text = f"{seconds:.1f} s" if seconds >= 1 else f"{seconds * 1e3:.0f} ms"
    return f"{time_text}, {peak / 2**20:.1f} MiB"


def main(argv=None):
    args = parse_args(argv)
    gpu = resolve_device(args.device)[0] == "gpu"
    paddle.set_device("gpu" if gpu else "cpu")
    meter = Meter(gpu)
    paddle.seed(0)
    grid = args.img_size // args.patch_size
    n = grid * grid
    print(f"device {paddle.get_device()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
          f"{n} tokens, batch {args.batch_size}, median of {args.iters}")
    rows = []
    for variant in args.variants:
        heads = HEADS[variant]
        dim = 48 * heads
        ours = GPSA(dim, heads, grid_size=(grid, grid))
        ours.local_init()
        theirs = nb.GPSA(dim, heads)
        theirs.set_state_dict(ours.state_dict())
        x = paddle.randn([args.batch_size, n, dim])
        compare(f"convit_{variant} GPSA (dim {dim}, {heads} heads)", ours, theirs, x, meter, args, rows)

    if not args.no_model:
        kw = dict(img_size=args.img_size, patch_size=args.patch_size)
        ref = getattr(nb, f"convit_{args.model}")(**kw)
        model = ppvit.create_model(f"convit_{args.model}", **kw)
        model.set_state_dict(ref.state_dict())
        img = paddle.randn([args.batch_size, 3, args.img_size, args.img_size])
        compare(f"whole convit_{args.model}", model, ref, img, meter, args, rows)

    print("\n| | notebook | ppvit | speed-up | memory |\n| --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
