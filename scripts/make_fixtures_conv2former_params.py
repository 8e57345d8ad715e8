"""Exact parameter counts of the official Conv2Former variants, for tests/test_conv2former.py (needs torch).

    <torch-venv>/bin/python scripts/make_fixtures_conv2former_params.py

The PyTorch model is the transcription of the official HVision-NKU code in make_fixtures_conv2former.py; the
variants' dims, depths and kernel sizes are those of the official models/conv2former.py (1000 classes).
Writes tests/fixtures/conv2former_official_param_counts.json: {variant: {"config": ..., "params": N}}.
"""
import argparse
import json
import os

from make_fixtures_conv2former import ROOT, Conv2Former  # same folder as this script

OFFICIAL = {
    "n": dict(dims=(64, 128, 256, 512), depths=(2, 2, 8, 2), kernel_size=7),
    "t": dict(dims=(72, 144, 288, 576), depths=(3, 3, 12, 3), kernel_size=11),
    "s": dict(dims=(72, 144, 288, 576), depths=(4, 4, 32, 4), kernel_size=11),
    "b": dict(dims=(96, 192, 384, 768), depths=(4, 4, 34, 4), kernel_size=11),
    "l": dict(dims=(128, 256, 512, 1024), depths=(4, 4, 48, 4), kernel_size=11),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures"))
    args = parser.parse_args()
    counts = {}
    for variant, cfg in OFFICIAL.items():
        model = Conv2Former(num_classes=1000, **cfg)
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        counts[variant] = {"config": cfg, "params": int(n)}
        print(variant, n)
    with open(os.path.join(args.out, "conv2former_official_param_counts.json"), "w", encoding="utf-8") as f:
        json.dump(counts, f, indent=1)


if __name__ == "__main__":
    main()
