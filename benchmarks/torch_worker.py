"""PyTorch as its users run it, for ``bench_predictor.py``: a process of its own that imports only torch, numpy
and the PyTorch re-implementations in scripts/ (no paddle, none of ppvit's process settings such as its
malloc tuning), and times one forward pass per request so that the parent can interleave it with its own paths.

    python benchmarks/torch_worker.py SPEC.pt     # started by bench_predictor.py, not by hand

``SPEC.pt`` (``torch.save``) holds ``script``, ``cls``, ``args`` and
``kwargs`` (the re-implementation's constructor), ``state`` (its state_dict) and ``x`` (the input batch, float32 NCHW). Requests on stdin, one per line:
``fp32`` / ``bf16`` time one forward (eager, or under ``torch.autocast`` bf16) and answer its seconds;
``out fp32`` / ``out bf16`` save that forward's output next to SPEC.pt (``SPEC.pt.fp32.npy``) and answer
``ok``; ``quit`` ends. Every answer is one line on stdout.
"""
import importlib.util
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script_module(name):
    """scripts/<name>.py as a module (scripts/ is not a package: by file path)."""
    module_spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "scripts", name + ".py"))
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def build(spec):
    ref = getattr(script_module(spec["script"]), spec["cls"])(*spec.get("args", ()), **spec.get("kwargs", {}))
    ref.load_state_dict(spec["state"])
    return ref.eval()


def main(spec_path):
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count()))
    spec = torch.load(spec_path, weights_only=False)
    ref, x = build(spec), spec["x"]

    def forward(precision):
        with torch.inference_mode():
            if precision == "bf16":
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return ref(x).float()
            return ref(x)

    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "out":
            np.save(f"{spec_path}.{words[1]}.npy", forward(words[1]).numpy())
            answer = "ok"
        else:
            t = time.perf_counter()
            forward(words[0])
            answer = repr(time.perf_counter() - t)
        print(answer, flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
