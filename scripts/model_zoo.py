"""Print the model-zoo table of the README: parameters and GMACs of every registered model.

    python scripts/model_zoo.py [--markdown] [--models PATTERN] [--include-norm]

Each model is built with its default class count (1000; 10 for the CIFAR models) and counted at the
input size of its ``ppvit.get_model_cfg(name)`` with ``ppvit.models.profile.count_flops`` (one eval forward pass, batch 1): multiply-
accumulates of convolutions, Linear layers and the attention products (matmuls; DilateFormer's dilated
windows as the paper's matmuls), i.e. the "FLOPs" papers report. Building and running the large models on
a CPU takes a few minutes in all.
"""
import argparse
import os
import sys
import time

from ppvit.utils import quiet_paddle_import  # noqa: E402

# OMP_NUM_THREADS = the cores and Paddle's import notices filtered, as the tools do; before paddle is imported
paddle = quiet_paddle_import()

import ppvit  # noqa: E402
from ppvit.models.profile import count_flops, count_params  # noqa: E402

# family prefix -> (source document (000-004, docs/reproduction.md), paper / official code)
_SOURCES = {
    "conv2former_n_cifar": ("000 notebook", "[Hou et al. 2024](https://arxiv.org/abs/2211.11943)"),
    "conv2former": ("001 + official", "[HVision-NKU/Conv2Former](https://github.com/HVision-NKU/Conv2Former)"),
    "convit": ("002 notebook", "[facebookresearch/convit](https://github.com/facebookresearch/convit)"),
    "coatnet": ("003 blog code", "[Dai et al. 2021](https://arxiv.org/abs/2106.04803)"),
    "convmixer_256_8": ("003 + official",
                        "[locuslab/convmixer-cifar10](https://github.com/locuslab/convmixer-cifar10)"),
    "convmixer": ("003 + official", "[locuslab/convmixer](https://github.com/locuslab/convmixer)"),
    "dilateformer": ("004 notebook", "[JIAOJIAYUASD/dilateformer](https://github.com/JIAOJIAYUASD/dilateformer)"),
}

# GFLOPs (= GMACs) at 224 in the papers' tables, as printed, for comparison. CoAtNet (in parentheses): the paper's
# network, which 003's code does not reproduce (17.8M vs 25M parameters for CoAtNet-0), so only a rough
# reference; the paper gives CoAtNet-4 at 384 only. The ConvMixer paper reports no FLOPs.
_PAPER_GMACS = {
    "conv2former_n": "2.2", "conv2former_t": "4.4", "conv2former_s": "8.7", "conv2former_b": "15.9",
    "conv2former_l": "35.7",
    "convit_tiny": "1.0", "convit_small": "5.4", "convit_base": "17",
    "coatnet_0": "(4.2)", "coatnet_1": "(8.4)", "coatnet_2": "(15.7)", "coatnet_3": "(34.7)",
    "dilateformer_t": "3.2", "dilateformer_s": "4.8", "dilateformer_b": "10.0",
}

# table order: the families in the order of the sources (000-004), each from its smallest model up
_FAMILIES = ("conv2former", "convit", "coatnet", "convmixer", "dilateformer")


def _source(name):
    # the longest matching prefix wins (convmixer_256_8 before convmixer)
    key = max((k for k in _SOURCES if name.startswith(k)), key=len, default=None)
    return _SOURCES.get(key, ("-", "-"))


def profile(name, include_norm=False):
    model = ppvit.create_model(name)
    c, h, w = ppvit.get_model_cfg(name).input_size
    start = time.time()
    macs, by_kind = count_flops(model, (1, c, h, w), include_norm=include_norm, by_kind=True)
    return dict(name=name, params=count_params(model), macs=macs, by_kind=by_kind, size=(h, w),
                classes=model.num_classes, seconds=time.time() - start)


def _row(r):
    notebook, paper = _source(r["name"])
    return [f"`{r['name']}`", f"{r['params'] / 1e6:.2f}", f"{r['macs'] / 1e9:.2f}",
            _PAPER_GMACS.get(r["name"], "-"), f"{r['size'][0]}x{r['size'][1]}",
            str(r["classes"]), notebook, paper]


HEADER = ["model", "params (M)", "GMACs", "paper GFLOPs", "input", "classes", "source", "paper / official code"]


def render(rows, markdown=True):
    cells = [HEADER] + [_row(r) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(c) + " |" for c in cells]
        lines.insert(1, "| " + " | ".join("---" if i in (0, 6, 7) else "---:" for i in range(len(HEADER))) + " |")
        return "\n".join(lines)
    widths = [max(len(c[i]) for c in cells) for i in range(len(HEADER) - 1)]  # drop the long link column
    return "\n".join("  ".join(c[i].ljust(widths[i]) for i in range(len(widths))) for c in cells)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", action="store_true", help="print a markdown table (for the README)")
    parser.add_argument("--models", default=None, help="shell pattern over registered names, e.g. 'convit_*'")
    parser.add_argument("--include-norm", action="store_true",
                        help="also count norm layers (one multiply-add per element)")
    parser.add_argument("--verbose", action="store_true", help="per-model breakdown and time on stderr")
    args = parser.parse_args(argv)

    paddle.set_device("cpu")
    names = ppvit.list_models(args.models)
    if not names:
        parser.error(f"no registered model matches {args.models!r}")
    rows, failed = [], []
    for name in names:
        try:
            r = profile(name, args.include_norm)
        except Exception as e:  # report and go on: one broken family should not hide the others
            failed.append(name)
            print(f"{name}: failed: {type(e).__name__}: {e}", file=sys.stderr)
            continue
        rows.append(r)
        if args.verbose:
            kinds = ", ".join(f"{k} {v / 1e9:.3f}" for k, v in sorted(r["by_kind"].items()))
            print(f"{name}: {kinds} GMACs ({r['seconds']:.1f}s)", file=sys.stderr)
    family = {f: i for i, f in enumerate(_FAMILIES)}
    rows.sort(key=lambda r: (family.get(r["name"].split("_")[0], len(family)), r["params"], r["name"]))
    print(render(rows, args.markdown))
    if args.markdown:
        print()
        print("GMACs: multiply-accumulates of one forward pass at the listed input size (batch 1), counting "
              "convolutions, Linear layers and the attention products, which is what the papers call FLOPs. "
              + ("Norm layers count one multiply-add per element; activations" if args.include_norm
                 else "Norms, activations") + ", softmax and pooling are not counted. "
              "CoAtNet figures in parentheses are the paper's network, which differs from 003's code "
              "(e.g. 25M parameters for CoAtNet-0).")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
