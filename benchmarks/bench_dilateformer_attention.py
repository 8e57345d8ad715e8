"""Time and peak memory of DilateFormer's multi-scale dilated attention: ppvit vs the notebook (004).

Two comparisons, each in the same process on the same weights and input. The whole multi-scale module:
  notebook  - the notebook's MultiDilatelocalAttention (nn.Unfold copies of K and V, in-place x[i] = ...);
              its backward fails on Paddle 3, so forward+backward is timed on "notebook-noinplace", the same
              Unfold math with the group outputs stacked instead of written into the input.
  ppvit     - ppvit.models.dilateformer.MultiDilatelocalAttention (shifted views of zero-padded K/V).

and the core of one dilation group alone (q, k, v -> neighbourhood attention, where the notebook's Unfold
copies of K and V live; the notebook's core has no in-place write, so its backward runs as is).

Peak memory is Paddle's own allocator peak (bytes allocated above what was live before the call): on CPU
``host_memory_stat_peak_value``, on GPU ``paddle.device.cuda.max_memory_allocated``.

    python benchmarks/bench_dilateformer_attention.py                 # B=2, C=72, 56x56 (stage 1 of T)
    python benchmarks/bench_dilateformer_attention.py --size 28 --dim 144 --heads 6   # stage 2

Then the whole DilateFormer-T (eval forward, B=2, --model-size 224; --no-model skips it). It ends with the
the markdown table of docs/benchmarks.md: "speed-up" is notebook time / ppvit time, "memory" ppvit's peak / the notebook's
(below 1: ppvit needs less).
"""
from ppvit.utils import quiet_paddle_import

# OMP_NUM_THREADS = the cores (Paddle's CPU kernels use one thread otherwise) and Paddle's import notices
# filtered, as the tools do; before anything imports paddle
quiet_paddle_import()

import argparse
import os
import time

import numpy as np  # noqa: E402
import paddle  # noqa: E402
from paddle.base import core

from notebook_reference import load_notebook
from ppvit.models.dilateformer import MultiDilatelocalAttention, dilate_attention
from ppvit.utils.device import resolve_device

NotebookCore = load_notebook("nb004_dilateformer").DilateAttention
NotebookAttention = load_notebook("nb004_dilateformer").MultiDilatelocalAttention


class NotebookNoInplace(NotebookAttention):
    """The notebook's Unfold formulation with the group outputs stacked (backward works)."""

    def forward(self, x):
        B, H, W, C = x.shape
        x = x.transpose((0, 3, 1, 2))
        qkv = self.qkv(x).reshape((B, 3, self.num_dilation, C // self.num_dilation, H, W))
        qkv = qkv.transpose((2, 1, 0, 3, 4, 5))
        outs = [self.dilate_attention[i](qkv[i][0], qkv[i][1], qkv[i][2]) for i in range(self.num_dilation)]
        x = paddle.stack(outs, axis=3).reshape((B, H, W, C))  # B, H, W, num_dilation, C/num_dilation
        return self.proj_drop(self.proj(x))


def _peak_tracker(gpu):
    if gpu:
        def reset():
            paddle.device.cuda.synchronize()
            base = paddle.device.cuda.memory_allocated()
            paddle.device.cuda.reset_max_memory_allocated()
            return base

        def peak(base):
            paddle.device.cuda.synchronize()
            return paddle.device.cuda.max_memory_allocated() - base
    else:
        def reset():
            core.host_memory_stat_reset_peak_value("Allocated", 0)
            return core.host_memory_stat_current_value("Allocated", 0)

        def peak(base):
            return core.host_memory_stat_peak_value("Allocated", 0) - base
    return reset, peak


def measure(fn, inputs, backward, repeats, warmup, gpu, params=()):
    """Median seconds per call of ``fn(*inputs)`` and the allocator peak in bytes of one call."""
    reset, peak = _peak_tracker(gpu)

    def step():
        if backward:
            for prm in params:
                prm.clear_gradient()
            xs = []
            for t in inputs:
                t = t.detach()
                t.stop_gradient = False
                xs.append(t)
            fn(*xs).sum().backward()
        else:
            with paddle.no_grad():
                fn(*inputs)
        if gpu:
            paddle.device.cuda.synchronize()

    for _ in range(warmup):
        step()
    base = reset()
    step()
    mem = peak(base)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), mem


PASSES = {"forward": "forward", "fwd+bwd": "forward + backward"}


def run_table(title, label, rows, args, gpu, table):
    """Measure ``rows`` and append one table row per pass (``label, pass``) to ``table``."""
    print(f"\n{title}")
    print(f"  {'pass':8s} {'version':20s} {'time ms':>9s} {'peak MiB':>9s}")
    results = {}
    for mode, name, fn, inputs, params in rows:
        t, mem = measure(fn, inputs, mode == "fwd+bwd", args.repeats, args.warmup, gpu, params)
        results[(mode, name)] = (t, mem)
        print(f"  {mode:8s} {name:20s} {t * 1e3:9.2f} {mem / 2**20:9.2f}")
    names = sorted({n for _, n in results if n != "ppvit"})
    for mode in PASSES:
        refs = [n for n in names if (mode, n) in results]
        if not refs:
            continue
        (t0, m0), (t1, m1) = results[(mode, refs[0])], results[(mode, "ppvit")]
        print(f"  {mode}: ppvit {t0 / t1:.2f}x faster than {refs[0]}, peak memory ppvit/{refs[0]} "
              f"{m1 / max(m0, 1):.2f}x")
        star = " *" if refs[0] == "notebook-noinplace" else ""
        table.append(f"| {label}, {PASSES[mode]} | {_fmt(t0, m0)}{star} | {_fmt(t1, m1)} | {t0 / t1:.2f}x | "
                     f"{m1 / max(m0, 1):.2f}x |")


def _fmt(seconds, peak):
    time_text = f"{seconds:.1f} s" if seconds >= 1 else f"{seconds * 1e3:.0f} ms"
    return f"{time_text}, {peak / 2**20:.1f} MiB"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--dim", type=int, default=72, help="channels (72 = DilateFormer-T stage 1)")
    p.add_argument("--heads", type=int, default=3)
    p.add_argument("--size", type=int, default=56, help="feature map side (56 = stage 1 at 224x224)")
    p.add_argument("--dilation", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "gpu"])
    p.add_argument("--model-size", type=int, default=224, help="input side of the whole DilateFormer-T")
    p.add_argument("--no-model", action="store_true", help="skip the whole-model comparison")
    args = p.parse_args(argv)
    table = []

    gpu = resolve_device(args.device)[0] == "gpu"
    paddle.set_device("gpu" if gpu else "cpu")
    paddle.seed(0)
    kw = dict(dim=args.dim, num_heads=args.heads, qkv_bias=True, dilation=args.dilation)
    ours = MultiDilatelocalAttention(**kw)
    nb = NotebookAttention(**kw)
    nb_noinplace = NotebookNoInplace(**kw)
    nb.set_state_dict(ours.state_dict())
    nb_noinplace.set_state_dict(ours.state_dict())
    for m in (ours, nb, nb_noinplace):
        m.eval()  # no dropout here anyway; eval keeps both formulations deterministic
    x = paddle.randn([args.batch, args.size, args.size, args.dim])  # B, H, W, C as the block feeds it

    with paddle.no_grad():
        diff = float(np.abs(ours(x).numpy() - nb(x).numpy()).max())
    print(f"device={'gpu' if gpu else 'cpu'} B={args.batch} C={args.dim} heads={args.heads} "
          f"HxW={args.size}x{args.size} dilations={args.dilation} OMP_NUM_THREADS="
          f"{os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(f"max |ppvit - notebook| (module) = {diff:.2e}")
    run_table("multi-scale dilated attention module (qkv, 3 groups, proj)", "whole module", [
        ("forward", "notebook", nb, [x], ()),
        ("forward", "ppvit", ours, [x], ()),
        ("fwd+bwd", "notebook-noinplace", nb_noinplace, [x], nb_noinplace.parameters()),
        ("fwd+bwd", "ppvit", ours, [x], ours.parameters()),
    ], args, gpu, table)

    # one dilation group: q, k, v of C/num_dilation channels, the largest dilation
    d, r = args.dim // len(args.dilation), max(args.dilation)
    head_dim = args.dim // args.heads
    nb_core = NotebookCore(head_dim, dilation=r)
    qkv = [paddle.randn([args.batch, d, args.size, args.size]) for _ in range(3)]  # B, d, H, W

    def ppvit_core(q, k, v):
        # the same B, d, H, W interface; layout changes are part of the measured cost
        q, k, v = (t.transpose([2, 3, 0, 1]) for t in (q, k, v))  # H, W, B, d
        return dilate_attention(q, k, v, head_dim, r).transpose([2, 3, 0, 1])

    with paddle.no_grad():
        core_diff = float(np.abs(ppvit_core(*qkv).numpy()
                                 - nb_core(*qkv).transpose([0, 3, 1, 2]).numpy()).max())
    run_table(f"one group's core (d={d}, dilation={r}); max |diff| = {core_diff:.2e}", "one dilation group", [
        ("forward", "notebook-unfold", nb_core, qkv, ()),
        ("forward", "ppvit", ppvit_core, qkv, ()),
        ("fwd+bwd", "notebook-unfold", nb_core, qkv, ()),
        ("fwd+bwd", "ppvit", ppvit_core, qkv, ()),
    ], args, gpu, table)

    if not args.no_model:  # the whole DilateFormer-T, the notebook's class vs ppvit's, same weights
        import ppvit

        size = args.model_size
        nb_model = load_notebook("nb004_dilateformer").Dilateformer(
            img_size=size, num_classes=10, depths=(2, 2, 6, 2), embed_dim=72, num_heads=(3, 6, 12, 24))
        model = ppvit.create_model("dilateformer_t", num_classes=10, img_size=size)
        model.set_state_dict(nb_model.state_dict())
        nb_model.eval(), model.eval()
        img = paddle.randn([args.batch, 3, size, size])
        run_table(f"whole DilateFormer-T, {size}x{size}, batch {args.batch}, eval", f"DilateFormer-T {size}x{size}",
                  [("forward", "notebook", nb_model, [img], ()), ("forward", "ppvit", model, [img], ())],
                  args, gpu, table)

    print("\n| | notebook | ppvit | speed-up | memory |\n| --- | --- | --- | --- | --- |")
    print("\n".join(table))

    try:  # the notebook's own forward+backward, to show why ppvit re-implements it
        xi = x.detach()
        xi.stop_gradient = False
        nb(xi).sum().backward()
        print("notebook fwd+bwd: ran (no in-place error on this Paddle)")
    except Exception as e:  # noqa: BLE001 - report whatever Paddle raises
        print(f"notebook fwd+bwd: fails on Paddle {paddle.__version__}: {str(e).splitlines()[0][:100]}")


if __name__ == "__main__":
    main()
