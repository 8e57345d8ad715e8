"""Training speed on CPU: ppvit's kernels (ppvit.kernels) vs Paddle's plain ops.

    PYTHONPATH=. python benchmarks/bench_train_speed.py                 # everything (~15 min on 2 cores)
    PYTHONPATH=. python benchmarks/bench_train_speed.py --models conv2former_n_cifar --no-layers
    PYTHONPATH=. python benchmarks/bench_train_speed.py --torch-python .venv-torch/bin/python  # + PyTorch eager

Prints, in one run:
1. images/s of one training step (forward, cross-entropy, backward, AdamW step) of each notebook model with
   the kernels off ("plain conv": ``depthwise_formulation("reference")``, exactly ``nn.Conv2D``) vs on (the
   shape rule), plus the notebook's own Conv2Former (tests/reference, the
   transcribed notebook code) and, when torch is importable (or ``--torch-python`` / ``PPVIT_TORCH_PYTHON``
   names a Python that has it), convmixer_256_8 in PyTorch eager ("plain conv" also turns off the fast bias add
   and the 1x1-as-matmul: every convolution is ``nn.Conv2D``);
   wall time gives images/s; process CPU time per step is printed too and is the steadier ratio when other
   processes share the cores (it leaves out waiting for a core);
2. the peak memory of one training step: Paddle's host allocator peak above what was allocated before the
   step (``host_memory_stat_peak_value``; on CPU every tensor goes through it, and unlike process RSS it is
   not hidden by memory the allocator keeps from earlier steps), with the layer's cached constants freed first
   so they count;
3. the layer alone for each (kernel, map, channels, batch) the families use: forward and forward + backward
   ms of Paddle's op vs the formulation the rule picks, and every formulation with ``--layer-sweep`` (how the
   table in ``ppvit.kernels.depthwise._select_formulation`` was measured).

The machine may be shared: variants are timed in alternation (a load change hits all alike), repeated, and
medians are reported; read the ratios, which are measured in the same run.
"""
import argparse
import gc
import importlib.util
import os
import time

import torch_python  # benchmarks/ (this script's folder) is first on sys.path

torch_python.run_under_torch_python()

from ppvit.utils import quiet_paddle_import  # noqa: E402

# OMP_NUM_THREADS = the cores (Paddle's and PyTorch's CPU kernels use one thread otherwise) and Paddle's import
# notices filtered, as the tools do; before paddle or torch is imported
quiet_paddle_import()  # noqa: E305

import numpy as np  # noqa: E402
import paddle  # noqa: E402
from paddle.base import core  # noqa: E402

import ppvit  # noqa: E402
from ppvit.kernels import DEPTHWISE_FORMULATIONS, depthwise_formulation  # noqa: E402
from ppvit.kernels import depthwise as dw_kernels  # noqa: E402
from ppvit.models.layers import DepthwiseConv2D  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# model -> (input size, batch, constructor kwargs): the notebooks' training setups
MODELS = {
    "conv2former_n_cifar": (32, 32, {}),
    "convmixer_256_8": (32, 64, {}),
    "convit_tiny": (224, 8, {"num_classes": 10}),
    "dilateformer_t": (224, 4, {"num_classes": 10}),
}

# the speed targets checked at the end: (model, reference variant, minimum speed ratio, kind)
TARGETS = [
    ("conv2former_n_cifar", "notebook code", 3.0, "target"),
    ("convmixer_256_8", "plain conv", 2.0, "target"),
    ("convmixer_256_8", "pytorch eager", 0.5, "goal"),
    ("convit_tiny", "plain conv", 1.0, "target"),
    ("dilateformer_t", "plain conv", 1.0, "target"),
]

# (kernel, map size, channels, batch) of the depthwise convs in those models
LAYER_SHAPES = [
    (11, 32, 64, 32), (11, 16, 128, 32), (11, 8, 256, 32), (11, 4, 512, 32),  # conv2former_n_cifar modulator
    (3, 32, 128, 32), (3, 16, 256, 32), (3, 8, 512, 32), (3, 4, 1024, 32),  # conv2former_n_cifar MLP pos
    (5, 16, 256, 64),  # convmixer_256_8
    (3, 56, 72, 4), (3, 28, 144, 4), (3, 14, 288, 4), (3, 7, 576, 4),  # dilateformer_t positional conv
    (7, 56, 64, 8), (7, 28, 128, 8), (7, 14, 256, 8), (7, 7, 512, 8),  # conv2former_n (official, kernel 7)
    (3, 56, 256, 8), (3, 28, 512, 8), (3, 14, 1024, 8), (3, 7, 2048, 8),  # conv2former_n MLP pos
    (3, 28, 384, 8), (3, 14, 768, 8),  # coatnet_0 MBConv
]


def _notebook_conv2former():
    """The transcribed notebook model (tests/reference/nb000_conv2former.py), loaded from its file."""
    path = os.path.join(REPO, "tests", "reference", "nb000_conv2former.py")
    spec = importlib.util.spec_from_file_location("nb000_conv2former", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Conv2Former(num_classes=10, depths=(2, 2, 8, 2), dim=(64, 128, 256, 512), mlp_ratio=2,
                              drop_path_rate=0.1)


def _peak_reset():
    core.host_memory_stat_reset_peak_value("Allocated", 0)
    return core.host_memory_stat_current_value("Allocated", 0)


def _peak(base):
    return core.host_memory_stat_peak_value("Allocated", 0) - base


class PaddleTrainer:
    """One model + AdamW; ``step()`` is one training step on a fixed random batch in ``mode``."""

    def __init__(self, model, size, batch, mode):
        paddle.seed(0)
        self.model, self.mode = model, mode
        self.model.train()
        self.opt = paddle.optimizer.AdamW(learning_rate=1e-4, parameters=self.model.parameters())
        rng = np.random.default_rng(0)
        self.x = paddle.to_tensor(rng.standard_normal((batch, 3, size, size)).astype("float32"))
        self.y = paddle.to_tensor(rng.integers(0, 10, (batch,)).astype("int64"))

    def step(self):
        with depthwise_formulation(self.mode):
            loss = paddle.nn.functional.cross_entropy(self.model(self.x), self.y)
            loss.backward()
        self.opt.step()
        self.opt.clear_grad()


class TorchConvMixerTrainer:
    """locuslab/convmixer-cifar10's ConvMixer-256/8 (k5, p2) in PyTorch eager, same batch and optimizer."""

    def __init__(self, torch, size, batch):
        # the PyTorch ConvMixer the conversion fixtures are made with (scripts/ is not a package: by file path)
        path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts",
                            "make_fixtures_coatnet_convmixer.py")
        spec = importlib.util.spec_from_file_location("make_fixtures_coatnet_convmixer", path)
        fixtures = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(fixtures)
        torch.manual_seed(0)
        self.torch = torch
        self.model = fixtures.ConvMixer(256, 8, kernel_size=5, patch_size=2, n_classes=10)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.x = torch.randn(batch, 3, size, size)
        self.y = torch.randint(0, 10, (batch,))

    def step(self):
        loss = self.torch.nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()


def _time(fn):
    """(wall seconds, process CPU seconds) of one call. CPU time (all threads) is the steadier figure when other
    processes share the cores: it leaves out the time spent waiting for a core."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def _interleaved(variants, repeats, steps, cpu=False):
    """{name: median seconds per call}, the variants timed in turn ``repeats`` times after one warm-up call;
    with ``cpu=True`` also {name: median process CPU seconds per call}."""
    for fn in variants.values():
        fn()
    wall = {name: [] for name in variants}
    proc = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            w, c = min((_time(fn) for _ in range(steps)), key=lambda t: t[0])
            wall[name].append(w)
            proc[name].append(c)
    med = {name: float(np.median(t)) for name, t in wall.items()}
    return (med, {name: float(np.median(t)) for name, t in proc.items()}) if cpu else med


def _step_peak(make_trainer):
    """Allocator peak (bytes) of one training step of a freshly built trainer, with the layer's caches
    emptied first (constants it builds count); the first step, so AdamW's moments count for every variant."""
    gc.collect()
    dw_kernels._index_cache.clear()
    trainer = make_trainer()
    base = _peak_reset()
    trainer.step()
    peak = _peak(base)
    del trainer
    gc.collect()
    return peak


def bench_models(names, repeats, steps, quick=False):
    try:
        import torch
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    except ImportError:
        torch = None
    summary = []
    print(f"== training step, images/s (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, median of {repeats}; "
          "peak = Paddle host allocator peak of one step above the memory live before it)")
    for name in names:
        size, batch, kwargs = MODELS[name]
        batch = 2 if quick else batch
        makers = {
            "plain conv": lambda: PaddleTrainer(ppvit.create_model(name, **kwargs), size, batch, "reference"),
            "ppvit": lambda: PaddleTrainer(ppvit.create_model(name, **kwargs), size, batch, "auto"),
        }
        if name == "conv2former_n_cifar":
            makers["notebook code"] = lambda: PaddleTrainer(_notebook_conv2former(), size, batch, "reference")
        peaks = {label: _step_peak(make) for label, make in makers.items()}
        trainers = {label: make() for label, make in makers.items()}
        variants = {label: t.step for label, t in trainers.items()}
        if name == "convmixer_256_8" and torch is not None:
            variants["pytorch eager"] = TorchConvMixerTrainer(torch, size, batch).step
        secs, cpu = _interleaved(variants, repeats, steps, cpu=True)
        print(f"{name} (batch {batch}, {size}x{size}):")
        for label, s in secs.items():
            mem = f"peak {peaks[label] / 2**20:7.1f} MiB" if label in peaks else ""
            print(f"  {label:14s} {batch / s:8.2f} img/s  {s * 1e3:8.0f} ms/step  {cpu[label] * 1e3:8.0f} CPU ms/step  "
                  f"{mem}")
        for ref in [k for k in secs if k != "ppvit"]:
            extra = f", peak memory {peaks['ppvit'] / peaks[ref]:.2f}x" if ref in peaks else ""
            print(f"  ppvit vs {ref}: {secs[ref] / secs['ppvit']:.2f}x the speed (by CPU time "
                  f"{cpu[ref] / cpu['ppvit']:.2f}x){extra}")
            for target_model, target_ref, target, what in TARGETS:
                if (name, ref) == (target_model, target_ref):
                    summary.append((name, ref, secs[ref] / secs["ppvit"], cpu[ref] / cpu["ppvit"],
                                    peaks["ppvit"] / peaks[ref] if ref in peaks else None, target, what))
        if name == "convmixer_256_8" and torch is None:
            print("  pytorch eager: skipped (" + torch_python.MISSING + ")")
        del trainers, variants
        gc.collect()
    if summary:
        print(f"== target ratios (ppvit speed / reference speed; load average {os.getloadavg()[0]:.1f} "
              f"on {os.cpu_count()} cores: with other processes, trust the CPU-time ratio)")
        for name, ref, wall, cpu_ratio, mem, target, what in summary:
            mem_text = f"  peak memory {mem:.2f}x (target <= 1.00x)" if ref == "notebook code" else ""
            verdict = "met" if min(wall, cpu_ratio) >= target else ("met by CPU time" if cpu_ratio >= target else
                                                                    "NOT met")
            print(f"  {name:20s} vs {ref:14s} {wall:5.2f}x wall, {cpu_ratio:5.2f}x CPU  ({what} {target:.2f}x: "
                  f"{verdict}){mem_text}")


def bench_layers(repeats, sweep, quick=False):
    print("== DepthwiseConv2D alone: forward / forward+backward ms (median), Paddle's op vs ppvit's choice")
    for k, hw, c, b in LAYER_SHAPES:
        if quick:
            c, b = max(c // 32, 1), 1
        paddle.seed(0)
        layer = DepthwiseConv2D(c, c, k, padding=k // 2, groups=c)
        x = paddle.randn([b, c, hw, hw])
        choice = dw_kernels._select_formulation(hw, hw, k, b * c)
        modes = ["reference", "auto"] + ([f for f in DEPTHWISE_FORMULATIONS if f != choice] if sweep else [])

        def fwd(mode):
            with paddle.no_grad(), depthwise_formulation(mode):
                layer(x)

        def fwd_bwd(mode):
            xg = x.detach()
            xg.stop_gradient = False
            with depthwise_formulation(mode):
                y = layer(xg)
            (y * y).sum().backward()
            layer.clear_gradients()

        variants = {}
        for mode in modes:
            variants[(mode, "f")] = lambda m=mode: fwd(m)
            variants[(mode, "fb")] = lambda m=mode: fwd_bwd(m)
        secs = _interleaved(variants, repeats, 1)
        ms = {key: s * 1e3 for key, s in secs.items()}
        line = (f"  k{k:<2d} {hw:2d}x{hw:<2d} C={c:<4d} B={b:<3d} plain {ms[('reference', 'f')]:7.1f} / "
                f"{ms[('reference', 'fb')]:7.1f}   ppvit[{choice}] {ms[('auto', 'f')]:7.1f} / {ms[('auto', 'fb')]:7.1f}"
                f"   {ms[('reference', 'f')] / ms[('auto', 'f')]:5.1f}x / {ms[('reference', 'fb')] / ms[('auto', 'fb')]:5.1f}x")
        if sweep:
            line += "   | " + "  ".join(f"{m} {ms[(m, 'f')]:.1f}/{ms[(m, 'fb')]:.1f}" for m in modes[2:])
        print(line, flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=5, help="timing rounds (median reported)")
    parser.add_argument("--steps", type=int, default=1, help="steps per round (the fastest counts)")
    parser.add_argument("--no-layers", action="store_true", help="skip the layer-alone table")
    parser.add_argument("--layer-sweep", action="store_true", help="time every formulation per layer shape")
    torch_python.add_argument(parser)
    parser.add_argument("--quick", action="store_true", help="toy sizes (batch 2, 1/32 of the channels): a smoke run")
    args = parser.parse_args()
    paddle.set_device("cpu")
    if args.models:
        bench_models(args.models, args.repeats, args.steps, args.quick)
    if not args.no_layers:
        bench_layers(args.repeats, args.layer_sweep, args.quick)


if __name__ == "__main__":
    main()
