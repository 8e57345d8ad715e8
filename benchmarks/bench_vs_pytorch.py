"""Training speed on CPU, every family: ppvit's dygraph training step vs the same network's in PyTorch.

    PYTHONPATH=. python benchmarks/bench_vs_pytorch.py --torch-python .venv-torch/bin/python
    PYTHONPATH=. python benchmarks/bench_vs_pytorch.py --torch-python .venv-torch/bin/python --quick

One training step = forward, cross-entropy, backward, AdamW step (lr 1e-4), gradients cleared, on a fixed
random batch, 10 classes, no stochastic depth on either side. The PyTorch networks: timm's ``convit_tiny``,
timm's ``ConvMixer`` (dim 256, depth 8, kernel 5, patch 2), and the transcriptions in scripts/ for the families
timm has in another form or not at all: CoAtNet (``make_fixtures_coatnet_convmixer.CoAtNet``, the
``coatnet_0`` configuration), Conv2Former (``make_fixtures_conv2former.Conv2Former``, the official code,
``conv2former_n``: kernel 7, dims 64-512, depths 2-2-8-2) and DilateFormer
(``make_fixtures_convert.Dilateformer``, the official code, ``dilateformer_t``: embed 72, depths 2-2-6-2).

PyTorch runs in a process of its own (benchmarks/torch_train_worker.py) under ``--torch-python`` /
``PPVIT_TORCH_PYTHON``, a Python with torch and timm (it needs neither paddle nor ppvit), without the
``MKL_DEBUG_CPU_TYPE`` that ppvit sets for Paddle's MKL on AMD CPUs (unless it was set before this script
started). Both sides use ``--threads`` threads (default 2). The two are timed in alternation, ``--repeats``
rounds after three warm-up steps each (Paddle's first steps grow its allocator's pools); medians are reported. Wall time gives images/s; the process CPU time per
step (all threads; ppvit's process, PyTorch's worker) is printed too and is the steadier ratio when other
processes share the cores. ``--quick``: 2 rounds, a smoke run at the full sizes.
"""
import argparse
import json
import os
import subprocess
import sys
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)

import torch_python  # noqa: E402  benchmarks/ (this script's folder) is first on sys.path

# family -> (ppvit model, input size, batch, the PyTorch model's spec for torch_train_worker.py)
FAMILIES = {
    "convmixer": ("convmixer_256_8", 32, 64, {
        "timm": "ConvMixer", "args": [256, 8], "kwargs": dict(kernel_size=5, patch_size=2, num_classes=10)}),
    "convit": ("convit_tiny", 224, 8, {"timm": "convit_tiny", "kwargs": dict(num_classes=10)}),
    "coatnet": ("coatnet_0", 224, 8, {
        "script": "make_fixtures_coatnet_convmixer", "cls": "CoAtNet", "kwargs": dict(
            image_size=[224, 224], num_blocks=[2, 2, 3, 5, 2], channels=[64, 96, 192, 384, 768], num_classes=10)}),
    "dilateformer": ("dilateformer_t", 224, 4, {
        "script": "make_fixtures_convert", "cls": "Dilateformer", "kwargs": dict(
            img_size=224, embed_dim=72, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24], num_classes=10)}),
    "conv2former": ("conv2former_n", 224, 8, {
        "script": "make_fixtures_conv2former", "cls": "Conv2Former", "kwargs": dict(
            kernel_size=7, dims=[64, 128, 256, 512], depths=[2, 2, 8, 2], num_classes=10)}),
}


class TorchTrainer:
    """One PyTorch model in a torch_train_worker.py process; ``step()`` -> (wall s, worker CPU s)."""

    def __init__(self, python, spec, env):
        self.proc = subprocess.Popen([python, os.path.join(BENCH, "torch_train_worker.py"), json.dumps(spec)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        words = self._answer("start").split()
        self.params = int(words[1])

    def _answer(self, request):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"torch_train_worker.py ended without answering {request!r} (its stderr is above)")
        return line

    def step(self):
        self.proc.stdin.write("step\n")
        self.proc.stdin.flush()
        wall, cpu = self._answer("step").split()
        return float(wall), float(cpu)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.flush()
            self.proc.wait(timeout=60)


class PaddleTrainer:
    """One ppvit model + AdamW; ``step()`` -> (wall s, this process's CPU s) of one training step."""

    def __init__(self, name, size, batch):
        import numpy as np
        import paddle
        import ppvit
        paddle.seed(0)
        self.paddle = paddle
        self.model = ppvit.create_model(name, num_classes=10, drop_path_rate=0.0)
        self.model.train()
        self.opt = paddle.optimizer.AdamW(learning_rate=1e-4, parameters=self.model.parameters())
        rng = np.random.default_rng(0)
        self.x = paddle.to_tensor(rng.standard_normal((batch, 3, size, size)).astype("float32"))
        self.y = paddle.to_tensor(rng.integers(0, 10, (batch,)).astype("int64"))
        self.params = sum(int(np.prod(p.shape)) for p in self.model.parameters() if not p.stop_gradient)

    def step(self):
        t0, c0 = time.perf_counter(), time.process_time()
        loss = self.paddle.nn.functional.cross_entropy(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        self.opt.clear_grad()
        return time.perf_counter() - t0, time.process_time() - c0


WARMUP = 3  # steps per side before timing


def _median(values):
    values = sorted(values)
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def time_family(family, repeats, threads, python, env):
    """One family's training step, ppvit's and PyTorch's (``python``, run with ``env``) alternating, after
    ``WARMUP`` steps each: ``{"name", "size", "batch", "params": (ppvit, PyTorch), "wall": {side: median s},
    "cpu": {side: median CPU s}}`` with sides ``ppvit`` and ``pytorch``."""
    name, size, batch, spec = FAMILIES[family]
    spec = dict(spec, size=size, batch=batch, classes=10, threads=threads)
    ours, theirs = PaddleTrainer(name, size, batch), TorchTrainer(python, spec, env)
    try:
        times = {"ppvit": [], "pytorch": []}
        for _ in range(WARMUP):
            ours.step(), theirs.step()
        for _ in range(repeats):
            times["ppvit"].append(ours.step())
            times["pytorch"].append(theirs.step())
    finally:
        theirs.close()
    return {"name": name, "size": size, "batch": batch, "params": (ours.params, theirs.params),
            "wall": {k: _median([t[0] for t in v]) for k, v in times.items()},
            "cpu": {k: _median([t[1] for t in v]) for k, v in times.items()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", nargs="*", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per side (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads of each side (default 2)")
    parser.add_argument("--quick", action="store_true", help="2 timed steps per side: a smoke run")
    parser.add_argument("--json", metavar="PATH", help="also write the results there (a list, one per family)")
    torch_python.add_argument(parser, help=f"a Python with torch and timm, which runs the PyTorch side in a process "
                              f"of its own (default: ${torch_python.ENV}; required)")
    args = parser.parse_args(argv)
    if not args.torch_python:
        print(f"error: no PyTorch to compare with; give --torch-python PYTHON or set {torch_python.ENV} "
              "(a Python with torch and timm, docs/benchmarks.md)", file=sys.stderr)
        return 2
    if not os.path.isfile(args.torch_python) or not os.access(args.torch_python, os.X_OK):
        print(f"error: --torch-python / {torch_python.ENV}: {args.torch_python} is not an executable Python",
              file=sys.stderr)
        return 2
    repeats = 2 if args.quick else args.repeats
    # PyTorch's environment: as its users run it (ppvit's MKL setting is for Paddle's MKL), the same threads
    torch_env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    from ppvit.utils import quiet_paddle_import
    quiet_paddle_import()  # Paddle's notices filtered and MKL_DEBUG_CPU_TYPE on AMD, as the tools do
    import paddle
    paddle.set_device("cpu")
    print(f"== training step, ppvit (Paddle {paddle.__version__}) vs PyTorch ({args.torch_python}), "
          f"{args.threads} threads each, median of {repeats} alternating steps after {WARMUP} warm-up; "
          f"MKL_DEBUG_CPU_TYPE={os.environ.get('MKL_DEBUG_CPU_TYPE', 'unset')} for ppvit, "
          f"{torch_env.get('MKL_DEBUG_CPU_TYPE', 'unset')} for PyTorch", flush=True)
    rows, results = [], []
    for family in args.families:
        r = time_family(family, repeats, args.threads, args.torch_python, torch_env)
        results.append(dict(r, family=family, threads=args.threads))
        name, size, batch, wall, cpu = r["name"], r["size"], r["batch"], r["wall"], r["cpu"]
        print(f"{name} ({size}x{size}, batch {batch}; params ppvit {r['params'][0]:,} / PyTorch {r['params'][1]:,}):")
        for side in ("ppvit", "pytorch"):
            print(f"  {side:8s} {batch / wall[side]:8.2f} img/s  {wall[side] * 1e3:8.0f} ms/step  "
                  f"{cpu[side]:7.2f} CPU s/step")
        ratio_wall, ratio_cpu = wall["pytorch"] / wall["ppvit"], cpu["pytorch"] / cpu["ppvit"]
        print(f"  ppvit / PyTorch: {ratio_wall:.2f}x the speed by wall time, {ratio_cpu:.2f}x by CPU time", flush=True)
        rows.append((name, size, batch, wall, cpu, ratio_wall, ratio_cpu))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    print(f"== summary (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; with other processes, "
          "trust the CPU-time ratio)")
    print("| model (input, batch) | ppvit img/s | PyTorch img/s | ratio (wall) | ppvit CPU s/step | "
          "PyTorch CPU s/step | ratio (CPU) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, size, batch, wall, cpu, ratio_wall, ratio_cpu in rows:
        print(f"| {name} ({size}, {batch}) | {batch / wall['ppvit']:.2f} | {batch / wall['pytorch']:.2f} | "
              f"{ratio_wall:.2f}x | {cpu['ppvit']:.2f} | {cpu['pytorch']:.2f} | {ratio_cpu:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
