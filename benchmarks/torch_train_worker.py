"""PyTorch training steps for ``bench_vs_pytorch.py``: a process of its own that imports only torch, numpy,
timm (for the timm models) and the PyTorch re-implementations in scripts/ (no paddle, none of ppvit's process
settings), builds one model and times its training steps on request, so that the parent can interleave them
with ppvit's.

    python benchmarks/torch_train_worker.py SPEC_JSON     # started by bench_vs_pytorch.py, not by hand

``SPEC_JSON`` is one JSON object: ``timm`` (a ``timm.create_model`` name, or ``ConvMixer``: timm's class for
a ConvMixer it has no name for) or ``script`` + ``cls`` (a
constructor in scripts/<script>.py, e.g. ``make_fixtures_conv2former`` / ``Conv2Former``), ``args`` and
``kwargs`` (the constructor's), ``size`` and ``batch`` (the input), ``classes`` (the labels' range) and
``threads`` (``torch.set_num_threads``). DilateFormer's attention writes its groups into a view of its
input in place, which training cannot run: the worker stacks them instead (same math). Requests on stdin,
one per line: ``step`` runs one training step (forward, cross-entropy, backward, AdamW step with lr 1e-4,
zero_grad) on a fixed random batch and answers ``WALL CPU``, its wall and this process's CPU seconds;
``quit`` ends. The first answer line, before any request, is ``ready PARAMS`` (the model's parameter count).
"""
import json
import os
import sys
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build(spec):
    """The model ``spec`` names (module docstring), in train mode."""
    if "timm" in spec:
        import timm
        if spec["timm"] == "ConvMixer":  # a ConvMixer that timm has no name for (e.g. 256/8, k5, p2)
            from timm.models.convmixer import ConvMixer
            return ConvMixer(*spec.get("args", ()), **spec.get("kwargs", {})).train()
        return timm.create_model(spec["timm"], *spec.get("args", ()), **spec.get("kwargs", {})).train()
    from torch_worker import script_module  # benchmarks/ (this script's folder) is first on sys.path
    module = script_module(spec["script"])
    if spec["cls"] == "Dilateformer":
        module.MultiDilatelocalAttention.forward = _dilate_attention_out_of_place
    return getattr(module, spec["cls"])(*spec.get("args", ()), **spec.get("kwargs", {})).train()


def _dilate_attention_out_of_place(self, x):
    """The official MultiDilatelocalAttention.forward with its dilation groups stacked instead of written into
    a view of the input in place (which autograd refuses in training: the qkv convolution keeps that input for
    its weight gradient). Same math, one copy of the group outputs either way."""
    B, H, W, C = x.shape
    qkv = self.qkv(x.permute(0, 3, 1, 2)).reshape(B, 3, self.num_dilation, C // self.num_dilation, H, W)
    qkv = qkv.permute(2, 1, 0, 3, 4, 5)
    x = torch.stack([self.dilate_attention[i](qkv[i][0], qkv[i][1], qkv[i][2]) for i in range(self.num_dilation)])
    return self.proj(x.permute(1, 2, 3, 0, 4).reshape(B, H, W, C))


def main(spec_text):
    spec = json.loads(spec_text)
    torch.set_num_threads(int(spec["threads"]))
    torch.manual_seed(0)
    model = build(spec)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((spec["batch"], 3, spec["size"], spec["size"])).astype("float32"))
    y = torch.from_numpy(rng.integers(0, spec["classes"], (spec["batch"],)).astype("int64"))
    print("ready", sum(p.numel() for p in model.parameters() if p.requires_grad), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "quit":
            break
        t0, c0 = time.perf_counter(), time.process_time()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        print(f"{time.perf_counter() - t0!r} {time.process_time() - c0!r}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
