"""Every family's CPU speed against PyTorch, in one run: deployment images/s and training-step images/s.

    python benchmarks/bench_cpu_speed.py --torch-python .venv-torch/bin/python
    python benchmarks/bench_cpu_speed.py --torch-python .venv-torch/bin/python --families dilateformer -n 5

Per family (the model, input and training batch of ``bench_vs_pytorch.FAMILIES``), two processes:

- deploy, ``bench_predictor.py -m NAME:SIZE:BATCH --no-lime``: ``export_model`` + ``Predictor`` with default
  arguments (``auto``: the backend the export measured fastest) against PyTorch eager fp32 and bf16 autocast
  on the same weights in a process of its own, every path timed in turn;
- train, ``bench_vs_pytorch.py --families FAMILY``: one training step (forward, cross-entropy, backward, AdamW)
  of ppvit and of the same network in PyTorch (its own process), alternating.

Each runs in a process of its own because PyTorch's OpenMP runtime, once imported beside Paddle's, leaves Paddle's
CPU kernels on one thread. PyTorch's networks: timm's ``convit_tiny`` and ``ConvMixer``, and the transcriptions
in scripts/ of CoAtNet (source 003), the official Conv2Former and the official DilateFormer. Threads:
``--threads`` (default: every core) for both sides. Each script's own report is printed as it runs; the last lines
are the summary table (markdown) that docs/benchmarks.md reports.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch_python  # benchmarks/ (this script's folder) is first on sys.path
from bench_vs_pytorch import FAMILIES  # imports neither paddle nor torch

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
# the deploy batch: bench_predictor's default (64 up to 64x64 inputs, else 16); model, input and training batch
# are bench_vs_pytorch.FAMILIES'
def deploy_batch(size):
    return 64 if size <= 64 else 16


def _run(script, args, env):
    """Run benchmarks/<script> with ``args`` + ``--json``, its report passed through; returns its JSON, or raises
    RuntimeError when the script fails."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "result.json")
        proc = subprocess.run([sys.executable, os.path.join(BENCH, script)] + args + ["--json", out], env=env)
        if proc.returncode != 0:
            raise RuntimeError(f"{script} {' '.join(args)} failed (exit code {proc.returncode}; its report is above)")
        with open(out, encoding="utf-8") as f:
            return json.load(f)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("-n", "--rounds", type=int, default=None, help="deploy: timed rounds (bench_predictor's default)")
    p.add_argument("--warmup", type=int, default=None, help="deploy: untimed rounds first (bench_predictor's default)")
    p.add_argument("--repeats", type=int, default=5, help="train: timed steps per side (median; default 5)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of every side (default: every core)")
    torch_python.add_argument(p, help=f"a Python with torch, timm and ppvit's dependencies (default: "
                              f"${torch_python.ENV}; required)")
    args = p.parse_args(argv)
    if not args.torch_python:
        p.error(f"no PyTorch to compare with; give --torch-python PYTHON or set {torch_python.ENV} "
                "(docs/benchmarks.md)")
    if not os.path.isfile(args.torch_python) or not os.access(args.torch_python, os.X_OK):
        p.error(f"--torch-python / {torch_python.ENV}: {args.torch_python} is not an executable Python")
    threads = args.threads or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=ROOT + (os.pathsep + path if path else ""))
    deploy_opts = [o for flag, value in (("-n", args.rounds), ("--warmup", args.warmup)) if value is not None
                   for o in (flag, str(value))]
    rows, failed = [], []
    for family in args.families:
        name, size = FAMILIES[family][:2]
        batch = deploy_batch(size)
        try:
            d = _run("bench_predictor.py", ["-m", f"{name}:{size}:{batch}", "--no-lime", "--torch-python",
                                            args.torch_python] + deploy_opts, env)[0]
            t = _run("bench_vs_pytorch.py", ["--families", family, "--repeats", str(args.repeats), "--threads",
                                             str(threads), "--torch-python", args.torch_python], env)[0]
        except RuntimeError as e:  # the other families still run and are reported
            print(f"error: {e}", file=sys.stderr, flush=True)
            failed.append(family)
            continue
        rows.append((d, t))
    print(f"\n== summary, {threads} threads each (load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    print("| model (input) | deploy batch | ppvit auto img/s | PyTorch fp32 | PyTorch bf16 | auto / fp32 | "
          "auto / faster PyTorch | train batch | ppvit train img/s | PyTorch train img/s | train ratio (wall / CPU) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for d, t in rows:
        s = d["speeds"]
        auto, fp32, bf16 = s["auto"], s.get("pytorch fp32"), s.get("pytorch bf16")
        ratios = (f"{auto / fp32:.2f}x | {auto / max(fp32, bf16):.2f}x" if fp32 and bf16 else "- | -")
        train = {side: t["batch"] / t["wall"][side] for side in ("ppvit", "pytorch")}
        print(f"| {d['name']} ({d['size']}) | {d['batch']} | {auto:.1f} ({d['auto']}) | "
              f"{fp32 or float('nan'):.1f} | {bf16 or float('nan'):.1f} | {ratios} | {t['batch']} | "
              f"{train['ppvit']:.2f} | {train['pytorch']:.2f} | {train['ppvit'] / train['pytorch']:.2f}x / "
              f"{t['cpu']['pytorch'] / t['cpu']['ppvit']:.2f}x |")
    if failed:
        print(f"error: not measured: {', '.join(failed)} (see above)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
