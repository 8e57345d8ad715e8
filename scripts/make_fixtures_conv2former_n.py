"""Make the Conv2Former-N fixtures of tests/test_conv2former.py (needs torch; CI does not run this).

    .venv-torch/bin/python scripts/make_fixtures_conv2former_n.py

The official HVision-NKU configuration of Conv2Former-N has a 7x7 depthwise kernel (the other sizes use
11x11). The PyTorch model is the transcription of the official code in make_fixtures_conv2former.py.
Writes into tests/fixtures/:
- conv2former_n_k7_tiny.npz: a reduced official model with the 7x7 kernel (dims 8/16/24/32, depths 1/1/2/1,
  head_dim 96, 10 classes): its state_dict under "param/<torch key>", input "x", eval output "y", build
  arguments under "cfg/<name>".
- conv2former_n_official_key_shapes.json: key -> shape of the full-size official Conv2Former-N (1000
  classes, kernel 7) and its trainable parameter count, for the full-size conversion test.
"""
import argparse
import json
import os

import torch

from make_fixtures_conv2former import ROOT, Conv2Former, randomize, save  # same folder as this script

# HVision-NKU/Conv2Former models/conv2former.py, conv2former_n
OFFICIAL_N = dict(dims=(64, 128, 256, 512), depths=(2, 2, 8, 2), kernel_size=7, num_classes=1000)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(7)

    tiny_cfg = dict(dims=(8, 16, 24, 32), depths=(1, 1, 2, 1), kernel_size=7, num_classes=10, head_dim=96)
    model = Conv2Former(**tiny_cfg)
    randomize(model, gen)
    x = torch.randn(2, 3, 64, 64, generator=gen)
    save(os.path.join(args.out, "conv2former_n_k7_tiny.npz"), model, x, tiny_cfg)

    full = Conv2Former(**OFFICIAL_N)
    shapes = {k: list(v.shape) for k, v in full.state_dict().items()}
    params = sum(p.numel() for p in full.parameters() if p.requires_grad)
    path = os.path.join(args.out, "conv2former_n_official_key_shapes.json")
    with open(path, "w") as f:
        json.dump({"config": OFFICIAL_N, "trainable_params": params, "shapes": shapes}, f, indent=0)
        f.write("\n")
    print(f"{path}: {len(shapes)} keys, {params} trainable parameters")


if __name__ == "__main__":
    main()
