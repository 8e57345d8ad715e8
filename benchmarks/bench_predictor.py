"""Images/s of every inference backend of an exported model against PyTorch eager fp32 and bf16 autocast, on
the same model, weights and batch, in one run; and the time of a 1000-sample LIME explanation.

    PYTHONPATH=. python benchmarks/bench_predictor.py --torch-python .venv-torch/bin/python  # the default models
    PYTHONPATH=. python benchmarks/bench_predictor.py -m convmixer_256_8:32:64 --rounds 20
    PYTHONPATH=. python benchmarks/bench_predictor.py --no-lime -m conv2former_n_cifar -b 8 -n 3

Paths timed per model (``NAME:SIZE:BATCH``): Paddle dygraph; the export's backends (``paddle`` = Paddle
Inference fp32 + oneDNN, ``paddle_bf16``, ``onnxruntime`` fp32) where export verified them; ``auto`` =
``export_model`` + ``Predictor`` with default arguments (what users get); and where PyTorch is installed and
a PyTorch re-implementation exists (ConViT and ConViT's timm layout, ConvMixer, DilateFormer, CoAtNet-0,
Conv2Former-N; from scripts/make_fixtures_*.py), PyTorch eager fp32 and ``torch.autocast`` bf16 on the same weights, twice:
``pytorch fp32``/``bf16`` in a process of its own (benchmarks/torch_worker.py: torch and the model only, as a
PyTorch user runs it; it times its forward pass on request, so its rounds interleave with the others), and
``... +malloc`` in this process. PyTorch comes from ``--torch-python`` / ``PPVIT_TORCH_PYTHON``
(benchmarks/torch_python.py) when the running Python has no torch. ``import ppvit`` tunes glibc's
malloc for the whole process (``ppvit.utils.quiet.keep_freed_memory``: freed activations reused, not
re-faulted), so PyTorch in this process runs with ppvit's tuning: its best case, not what its users get by
default. Every path runs once per
round, in turn, after warm-up, so a load change on a shared machine hits all alike, with a pause before each
(Paddle's OpenMP threads spin for 200 ms after a call and would slow whatever runs next); the table shows
medians. Ratios are the ``auto`` path against PyTorch fp32 and against the faster of PyTorch fp32/bf16, for
PyTorch as users run it and for PyTorch given ppvit's malloc tuning.
"""
import argparse
import importlib.util
import os
import tempfile
import sys
import time

import torch_python  # benchmarks/ (this script's folder) is first on sys.path

if "--lime-only" not in sys.argv:  # LIME alone uses no PyTorch
    torch_python.run_under_torch_python()

from ppvit.utils import quiet_paddle_import  # noqa: E402

# OMP_NUM_THREADS = the cores (Paddle's and PyTorch's CPU kernels use one thread otherwise) and Paddle's import
# notices filtered, as the tools do; before paddle or torch is imported
quiet_paddle_import()  # noqa: E305

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import ppvit  # noqa: E402
from ppvit.deploy import Predictor, export_model  # noqa: E402
from ppvit.deploy.export import ENGINE_SWITCH_PAUSE_S  # noqa: E402
from ppvit.explain import LimeImageExplainer, predictor_predict_fn  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the default table: model, input side, batch
DEFAULT_RUNS = ["convit_tiny:224:16", "convmixer_256_8:32:64", "conv2former_n_cifar:32:64"]


# ------------------------------------------------------------------------------------------------- PyTorch
def _torch():
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    return torch


def _script(name):
    """A module of scripts/ by file path (scripts/ is not a package; no sys.path edit)."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# the official DilateFormer's arguments (scripts/make_fixtures_convert.Dilateformer) for ppvit's models
DILATEFORMER_ARCHS = {
    "dilateformer_t": dict(embed_dim=72, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24]),
}


# models whose PyTorch side (scripts/<script>.<cls>) has ppvit's converter (the cfg's checkpoint_filter_fn): the
# PyTorch model keeps its random weights and ``model`` is given them, converted
CONVERTED_ARCHS = {
    "coatnet_0": ("make_fixtures_coatnet_convmixer", "CoAtNet", lambda size, n: dict(  # source 003's
        image_size=[size, size], num_blocks=[2, 2, 3, 5, 2], channels=[64, 96, 192, 384, 768], num_classes=n)),
    "conv2former_n": ("make_fixtures_conv2former", "Conv2Former", lambda size, n: dict(  # the official code
        kernel_size=7, dims=[64, 128, 256, 512], depths=[2, 2, 8, 2], num_classes=n)),
}


def torch_spec(name, model, size):
    """The PyTorch re-implementation of ``model`` as ``benchmarks/torch_worker.py`` builds it: ``{"script",
    "cls", "args", "kwargs", "state"}`` with ``model``'s weights (for ``CONVERTED_ARCHS``, ``model`` is given
    the PyTorch model's weights instead), or (None, why). Call it before exporting ``model``."""
    torch = _torch()
    if torch is None:
        return None, "PyTorch: " + torch_python.MISSING
    if name.startswith("convit"):
        spec = {"script": "make_fixtures_convert", "cls": "ConViT", "args": (), "kwargs": dict(
            img_size=size, patch_size=model.patch_embed.proj._kernel_size[0], num_classes=model.num_classes,
            embed_dim=model.embed_dim // model.blocks[0].attn.num_heads,
            depth=len(model.blocks), num_heads=model.blocks[0].attn.num_heads,
            local_up_to_layer=model.local_up_to_layer)}
    elif name.startswith("convmixer"):
        conv = model.state_dict()["0.weight"]
        dim, patch = conv.shape[0], conv.shape[-1]
        kernel = model.state_dict()["3.0.fn.0.weight"].shape[-1]
        depth = sum(1 for k in model.state_dict() if k.endswith(".0.fn.0.weight"))
        act = torch.nn.ReLU if "768_32" in name else torch.nn.GELU
        spec = {"script": "make_fixtures_coatnet_convmixer", "cls": "ConvMixer",
                "args": (dim, depth, kernel, patch, model.num_classes, act), "kwargs": {}}
    elif name in DILATEFORMER_ARCHS:
        spec = {"script": "make_fixtures_convert", "cls": "Dilateformer", "args": (), "kwargs": dict(
            img_size=size, num_classes=model.num_classes, **DILATEFORMER_ARCHS[name])}
    elif name in CONVERTED_ARCHS:  # PyTorch's random weights into ``model`` through ppvit's converter
        script, cls, kwargs = CONVERTED_ARCHS[name]
        spec = {"script": script, "cls": cls, "args": (), "kwargs": kwargs(size, model.num_classes)}
        ref = getattr(_script(script), cls)(**spec["kwargs"])
        state = ref.state_dict()
        model.set_state_dict(ppvit.get_model_cfg(name).checkpoint_filter_fn({k: v.numpy() for k, v in state.items()}))
        return spec | {"state": state}, None
    else:
        return None, f"no PyTorch re-implementation of {name} in scripts/"
    module = _script(spec["script"])
    ref = getattr(module, spec["cls"])(*spec["args"], **spec["kwargs"])
    linears = {n + ".weight" for n, m in ref.named_modules() if isinstance(m, torch.nn.Linear)}
    src = {k: v.numpy() for k, v in model.state_dict().items()}
    state = {}
    for key, value in ref.state_dict().items():
        if key.endswith("num_batches_tracked"):
            state[key] = value
            continue
        pkey = key.replace("running_mean", "_mean").replace("running_var", "_variance")
        w = src[pkey].T if key in linears else src[pkey]  # Paddle stores Linear weights [in, out]
        state[key] = torch.from_numpy(np.ascontiguousarray(w)).reshape(value.shape)
    spec["state"] = state
    return spec, None


def _worker():
    """benchmarks/torch_worker.py as a module (its ``build`` makes the in-process model too)."""
    spec = importlib.util.spec_from_file_location("torch_worker", os.path.join(ROOT, "benchmarks", "torch_worker.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torch_paths(spec):
    """PyTorch eager fp32 and bf16 autocast on ``spec``'s model in this process (which has ppvit's malloc
    tuning, ``ppvit.utils.quiet.keep_freed_memory``: PyTorch's best case)."""
    torch = _torch()
    ref = _worker().build(spec)

    def fp32(x):
        with torch.inference_mode():
            return ref(torch.from_numpy(x)).numpy()

    def bf16(x):
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return ref(torch.from_numpy(x)).float().numpy()

    return {"pytorch fp32 +malloc": fp32, "pytorch bf16 +malloc": bf16}


class RemoteTorch:
    """One precision of PyTorch in a process of its own (``torch_worker.py``: torch, numpy and the model only,
    glibc's default malloc: PyTorch as its users run it). Calling it times one forward there and returns the
    seconds (``remote_timing``); ``output()`` returns that forward's logits."""

    remote_timing = True

    def __init__(self, proc, spec_path, precision):
        self.proc, self.spec_path, self.precision = proc, spec_path, precision

    def _ask(self, request):
        self.proc.stdin.write(request + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        if not answer:
            raise RuntimeError(f"torch_worker.py ended without answering {request!r} (its stderr is above)")
        return answer

    def __call__(self, x):
        return float(self._ask(self.precision))

    def output(self):
        self._ask(f"out {self.precision}")
        return np.load(f"{self.spec_path}.{self.precision}.npy")


def remote_torch_paths(spec, x, folder, name):
    """PyTorch fp32 and bf16 in a worker process on ``x``; returns (paths, the process to close)."""
    import subprocess
    import sys

    torch = _torch()
    spec_path = os.path.join(folder, f"{name}.torch_spec.pt")
    torch.save(spec | {"x": torch.from_numpy(x)}, spec_path)
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "benchmarks", "torch_worker.py"), spec_path],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    return {"pytorch fp32": RemoteTorch(proc, spec_path, "fp32"),
            "pytorch bf16": RemoteTorch(proc, spec_path, "bf16")}, proc


# --------------------------------------------------------------------------------------------------- timing
def timed(paths, x, rounds, warmup):
    for fn in paths.values():
        for _ in range(warmup):
            fn(x)
    times = {name: [] for name in paths}
    for _ in range(rounds):
        for name, fn in paths.items():
            # Paddle's Intel OpenMP threads spin for 200 ms after a call (KMP_BLOCKTIME): let them sleep, or
            # the next path (PyTorch's own thread pool, ONNX Runtime's) would share the cores with them
            time.sleep(ENGINE_SWITCH_PAUSE_S)
            t = time.perf_counter()
            remote = fn(x)
            # a worker process reports its own forward time (the request's pipe round trip left out)
            times[name].append(remote if getattr(fn, "remote_timing", False) else time.perf_counter() - t)
    return {name: len(x) / float(np.median(ts)) for name, ts in times.items()}


def bench_model(name, size, batch, rounds, warmup, folder):
    paddle.seed(0)
    model = ppvit.create_model(name, num_classes=10, img_size=size)
    model.eval()
    spec, why = torch_spec(name, model, size)  # may set model's weights: before the export
    prefix = os.path.join(folder, name)
    t = time.perf_counter()
    info = export_model(model, prefix, size, {"model": name})  # default arguments: verify + time every backend
    export_s = time.perf_counter() - t
    x = np.random.RandomState(0).standard_normal((batch, 3, size, size)).astype("float32")

    def dygraph(a):
        with paddle.no_grad():
            return model(paddle.to_tensor(a)).numpy()

    paths = {"paddle dygraph": dygraph}
    for backend, rec in info["backends"].items():
        if rec["verified"]:
            paths[backend] = Predictor(prefix, device="cpu", backend=backend)
    auto = Predictor(prefix)  # default arguments, as users call it
    paths["auto"] = auto
    proc = None
    try:
        if spec is not None:
            remote, proc = remote_torch_paths(spec, x, folder, name)
            paths.update(remote)
            paths.update(torch_paths(spec))
        outputs = {n: (fn.output() if getattr(fn, "remote_timing", False) else fn(x)) for n, fn in paths.items()}
        speeds = timed(paths, x, rounds, warmup)
    finally:
        if proc is not None:
            proc.communicate("quit\n", timeout=60)
    base = outputs["paddle dygraph"]
    diffs = {n: float(np.abs(o - base).max()) for n, o in outputs.items()}
    return {"name": name, "size": size, "batch": batch, "speeds": speeds, "diffs": diffs, "info": info,
            "auto": auto.backend_name, "torch": why, "export_s": export_s}


class _TimedPredictor:
    """``predictor`` with the wall time and images of every call recorded (LIME's forward batches)."""

    def __init__(self, predictor):
        self.predictor, self.batch_size = predictor, predictor.batch_size
        self.seconds, self.images = 0.0, 0

    def __call__(self, x):
        t = time.perf_counter()
        out = self.predictor(x)
        self.seconds += time.perf_counter() - t
        self.images += len(x)
        return out


def bench_lime(folder, runs=3, num_samples=1000, batch_size=None):
    """A ``num_samples`` LIME explanation of conv2former_n_cifar (32x32) through ``Predictor()`` (default
    arguments): (median seconds, backend, seconds per run, images/s of the forward batches per run, images
    classified per run)."""
    paddle.seed(0)
    model = ppvit.create_model("conv2former_n_cifar", num_classes=10)
    prefix = os.path.join(folder, "lime_conv2former_n_cifar")
    export_model(model, prefix, 32)
    pred = Predictor(prefix)
    image = np.random.RandomState(1).randint(0, 256, (32, 32, 3)).astype(np.uint8)
    kwargs = {} if batch_size is None else {"batch_size": batch_size}
    times, speeds = [], []
    for _ in range(runs):
        timed_pred = _TimedPredictor(pred)
        explainer = LimeImageExplainer(predictor_predict_fn(timed_pred), random_seed=0, progress=False)
        t = time.perf_counter()
        explainer.interpret(image, num_samples=num_samples, visual=False, **kwargs)
        times.append(time.perf_counter() - t)
        speeds.append(timed_pred.images / timed_pred.seconds)
    return float(np.median(times)), pred.backend_name, times, speeds, timed_pred.images


# ---------------------------------------------------------------------------------------------------- main
ROUNDS, WARMUP = 10, 2  # timed and untimed rounds per model, unless -n / --warmup say otherwise


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-m", "--models", nargs="+", default=None,
                   help=f"NAME[:SIZE[:BATCH]] (default: {' '.join(DEFAULT_RUNS)}; size: the notebook's, batch: 64 up "
                        "to 64x64, else 16)")
    p.add_argument("-b", "--batch-size", type=int, default=None, help="batch for every model (default: its own)")
    p.add_argument("--size", type=int, default=None, help="input size for every model (default: its own)")
    p.add_argument("-n", "--rounds", type=int, default=None,
                   help=f"timed rounds (every path once per round; default {ROUNDS})")
    p.add_argument("--warmup", type=int, default=None, help=f"untimed rounds first (default {WARMUP})")
    p.add_argument("--lime-samples", type=int, default=1000, help="LIME perturbed samples")
    p.add_argument("--lime-runs", type=int, default=5, help="LIME explanations timed (median)")
    p.add_argument("--json", metavar="PATH", help="also write the model table there (images/s per path, the auto "
                   "backend, the largest difference to dygraph; a list, one per model)")
    torch_python.add_argument(p)
    lime = p.add_mutually_exclusive_group()
    lime.add_argument("--no-lime", action="store_true", help="skip the LIME timing")
    lime.add_argument("--lime-only", action="store_true", help="only the LIME timing (no model table)")
    args = p.parse_args(argv)
    table_args = [flag for flag, value in (("-m", args.models), ("-b", args.batch_size), ("--size", args.size),
                                           ("-n", args.rounds), ("--warmup", args.warmup)) if value is not None]
    if args.lime_only and table_args:
        p.error(f"--lime-only times LIME on conv2former_n_cifar only, so the model table's options "
                f"({', '.join(table_args)}) do not apply: drop them, or drop --lime-only")
    models = [] if args.lime_only else (args.models or DEFAULT_RUNS)
    args.rounds = ROUNDS if args.rounds is None else args.rounds
    args.warmup = WARMUP if args.warmup is None else args.warmup
    runs = []
    for spec in models:
        name, _, rest = spec.partition(":")
        size, _, batch = rest.partition(":")  # NAME[:SIZE[:BATCH]]
        if not ppvit.models.is_model(name):
            p.error(ppvit.models.registry.unknown_model_message(name))
        size = args.size or int(size or ppvit.get_model_cfg(name).input_size[-1])
        runs.append((name, size, args.batch_size or int(batch or (64 if size <= 64 else 16))))

    paddle.set_device("cpu")
    torch = None if args.lime_only else _torch()
    if args.lime_only:
        explanations = f"{args.lime_runs} explanation{'s' if args.lime_runs != 1 else ''}"
        print(f"paddle {paddle.__version__}, torch not used, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; "
              f"LIME timing only (median of {explanations})", flush=True)
    else:
        print(f"paddle {paddle.__version__}, torch {torch.__version__ if torch else 'not installed'}, "
              f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, {args.rounds} rounds after {args.warmup} warm-up; "
              "images/s (median)", flush=True)
    if torch is None and not args.lime_only:
        print("PyTorch columns skipped: " + torch_python.MISSING, flush=True)
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for name, size, batch in runs:
            r = bench_model(name, size, batch, args.rounds, args.warmup, folder)
            results.append(r)
            print(f"\n{name} {size}x{size}, batch {batch} (export + verification + timing {r['export_s']:.0f} s; "
                  f"auto -> {r['auto']})")
            if r["torch"]:
                print(f"  PyTorch skipped: {r['torch']}")
            for backend, rec in r["info"]["backends"].items():
                if not rec["verified"]:
                    print(f"  {backend}: not offered ({rec['reason']})")
            torch_fp32 = r["speeds"].get("pytorch fp32")
            torch_best = max((r["speeds"][k] for k in ("pytorch fp32", "pytorch bf16") if k in r["speeds"]),
                             default=None)
            dygraph = r["speeds"]["paddle dygraph"]
            print(f"  {'path':<22}{'images/s':>10}{'vs dygraph':>12}{'vs torch fp32':>15}{'vs best torch':>15}"
                  f"{'max|diff| to dygraph':>22}")
            for path, speed in r["speeds"].items():
                vs32 = f"{speed / torch_fp32:.2f}x" if torch_fp32 else "-"
                vsbest = f"{speed / torch_best:.2f}x" if torch_best else "-"
                print(f"  {path:<22}{speed:>10.1f}{speed / dygraph:>11.2f}x{vs32:>15}{vsbest:>15}"
                      f"{r['diffs'][path]:>22.2e}")
        if not args.no_lime:
            secs, backend, times, speeds, images = bench_lime(folder, args.lime_runs, args.lime_samples)
            if not args.lime_only:
                print()  # after the model table
            print(f"LIME, {args.lime_samples} samples, conv2former_n_cifar 32x32 through Predictor() ({backend}): "
                  f"{secs:.2f} s median of {', '.join(f'{t:.2f}' for t in times)}; forward batches "
                  f"{', '.join(f'{v:.0f}' for v in speeds)} images/s ({images} distinct images per run)")
    if args.json:
        import json
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump([{k: r[k] for k in ("name", "size", "batch", "speeds", "diffs", "auto", "torch")} for r in results],
                      f, indent=1)
    if torch is not None:
        print("\nauto (export_model + Predictor, default arguments) against PyTorch, same batch, same run:")
        for r in results:
            s = r["speeds"]
            for suffix, what in (("", "PyTorch in its own process"), (" +malloc", "PyTorch with ppvit's malloc tuning")):
                if "pytorch fp32" + suffix in s:
                    fp32, bf16 = s["pytorch fp32" + suffix], s["pytorch bf16" + suffix]
                    print(f"  {r['name']:<22} {s['auto'] / fp32:.2f}x eager fp32, {s['auto'] / max(fp32, bf16):.2f}x "
                          f"the faster of fp32/bf16 ({what}; auto = {r['auto']})")

if __name__ == "__main__":
    main()
