"""Make the PyTorch reference fixtures for tests/test_conv2former.py (needs torch; CI does not run this).

    .venv-torch/bin/python scripts/make_fixtures_conv2former.py

The PyTorch modules below are transcribed from source 001 (Block, SpatialAttention, MLP,
channels-first LayerNorm) and, for the stem, downsampling and head around them, from the official
HVision-NKU/Conv2Former models/conv2former.py. They exist only to produce reference outputs.

Writes two small .npz files into tests/fixtures/:
- conv2former_block.npz: one 001 Block (dim 16, kernel 7, mlp_ratio 4, the blog's example kernel size)
- conv2former_tiny.npz: a reduced official model (dims 8/16/24/32, depths 1/1/2/1, kernel 11, head_dim 96)
Each holds the torch state_dict under "param/<torch key>", the input "x", the eval-mode output "y" and the
build arguments under "cfg/<name>".
"""
import argparse
import os

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- transcribed from source 001 ------------------------------------------------------------------------
class LayerNorm(nn.Module):
    def __init__(self, normalized_shape, eps=1e-6, data_format="channels_last"):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(normalized_shape))
        self.bias = nn.Parameter(torch.zeros(normalized_shape))
        self.eps = eps
        self.data_format = data_format
        if self.data_format not in ["channels_last", "channels_first"]:
            raise NotImplementedError
        self.normalized_shape = (normalized_shape,)

    def forward(self, x):
        if self.data_format == "channels_last":
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class MLP(nn.Module):
    def __init__(self, dim, mlp_ratio=4):
        super().__init__()
        self.norm = LayerNorm(dim, eps=1e-6, data_format="channels_first")
        self.fc1 = nn.Conv2d(dim, dim * mlp_ratio, 1)
        self.pos = nn.Conv2d(dim * mlp_ratio, dim * mlp_ratio, 3, padding=1, groups=dim * mlp_ratio)
        self.fc2 = nn.Conv2d(dim * mlp_ratio, dim, 1)
        self.act = nn.GELU()

    def forward(self, x):
        x = self.norm(x)
        x = self.fc1(x)
        x = self.act(x)
        x = x + self.act(self.pos(x))
        x = self.fc2(x)
        return x


class SpatialAttention(nn.Module):
    def __init__(self, dim, kernel_size, expand_ratio=2):
        super().__init__()
        self.norm = LayerNorm(dim, eps=1e-6, data_format="channels_first")
        self.att = nn.Sequential(
            nn.Conv2d(dim, dim, 1),
            nn.GELU(),
            nn.Conv2d(dim, dim, kernel_size=kernel_size, padding=kernel_size // 2, groups=dim)
        )
        self.v = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x):
        x = self.norm(x)
        x = self.att(x) * self.v(x)
        x = self.proj(x)
        return x


class Block(nn.Module):
    def __init__(self, dim, kernel_size, mlp_ratio=4., drop_path=0.):
        super().__init__()
        self.attn = SpatialAttention(dim, kernel_size)
        self.drop_path = nn.Identity()  # the fixtures are eval-mode outputs; drop path is a no-op there
        self.mlp = MLP(dim, mlp_ratio)
        layer_scale_init_value = 1e-6
        self.layer_scale_1 = nn.Parameter(layer_scale_init_value * torch.ones((dim)), requires_grad=True)
        self.layer_scale_2 = nn.Parameter(layer_scale_init_value * torch.ones((dim)), requires_grad=True)

    def forward(self, x):
        x = x + self.drop_path(self.layer_scale_1.unsqueeze(-1).unsqueeze(-1) * self.attn(x))
        x = x + self.drop_path(self.layer_scale_2.unsqueeze(-1).unsqueeze(-1) * self.mlp(x))
        return x


# ---- transcribed from HVision-NKU/Conv2Former models/conv2former.py (stem, downsampling, head) -----------
class Conv2Former(nn.Module):
    def __init__(self, kernel_size, in_chans=3, num_classes=1000, depths=(3, 3, 9, 3), dims=(96, 192, 384, 768),
                 mlp_ratios=(4, 4, 4, 4), head_dim=1280):  # head_dim: 1280 in the official code
        super().__init__()
        self.downsample_layers = nn.ModuleList()
        stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0] // 2, kernel_size=3, stride=2, padding=1, bias=False),
            nn.GELU(),
            nn.BatchNorm2d(dims[0] // 2),
            nn.Conv2d(dims[0] // 2, dims[0] // 2, kernel_size=3, stride=1, padding=1, bias=False),
            nn.GELU(),
            nn.BatchNorm2d(dims[0] // 2),
            nn.Conv2d(dims[0] // 2, dims[0], kernel_size=2, stride=2, bias=False),
        )
        self.downsample_layers.append(stem)
        for i in range(len(dims) - 1):
            self.downsample_layers.append(nn.Sequential(
                LayerNorm(dims[i], eps=1e-6, data_format="channels_first"),
                nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2),
            ))
        self.stages = nn.ModuleList()
        for i in range(len(dims)):
            self.stages.append(nn.Sequential(
                *[Block(dim=dims[i], kernel_size=kernel_size, mlp_ratio=mlp_ratios[i]) for _ in range(depths[i])]))
        self.head = nn.Sequential(
            nn.Conv2d(dims[-1], head_dim, 1),
            nn.GELU(),
            LayerNorm(head_dim, eps=1e-6, data_format="channels_first"),
        )
        self.pred = nn.Linear(head_dim, num_classes)

    def forward(self, x):
        for i in range(4):
            x = self.downsample_layers[i](x)
            x = self.stages[i](x)
        x = self.head(x)
        return self.pred(x.mean([-2, -1]))


# ---- fixtures ------------------------------------------------------------------------------------------
def randomize(model, gen):
    """Give every tensor a distinct, non-trivial value: with the official init the layer scales (1e-6),
    norms (identity) and BatchNorm statistics (0/1) would hide mistakes in their mapping."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_scale_1") or name.endswith("layer_scale_2"):
                p.copy_(0.5 + torch.rand(p.shape, generator=gen))
            elif p.ndim == 1:  # norm weights/biases and conv/linear biases
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in ** 0.5)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))


def save(path, model, x, cfg):
    model.eval()
    with torch.no_grad():
        y = model(x)
    arrays = {"param/" + k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    arrays.update({"x": x.numpy(), "y": y.numpy()})
    arrays.update({"cfg/" + k: np.asarray(v) for k, v in cfg.items()})
    np.savez_compressed(path, **arrays)
    print(f"{path}: {os.path.getsize(path) / 1024:.0f} KB, output {tuple(y.shape)}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    block_cfg = dict(dim=16, kernel_size=7, mlp_ratio=4)
    block = Block(**block_cfg)
    randomize(block, gen)
    x = torch.randn(2, block_cfg["dim"], 12, 12, generator=gen)
    save(os.path.join(args.out, "conv2former_block.npz"), block, x, block_cfg)

    model_cfg = dict(dims=(8, 16, 24, 32), depths=(1, 1, 2, 1), kernel_size=11, num_classes=10, head_dim=96)
    model = Conv2Former(**model_cfg)
    randomize(model, gen)
    x = torch.randn(2, 3, 64, 64, generator=gen)
    save(os.path.join(args.out, "conv2former_tiny.npz"), model, x, model_cfg)


if __name__ == "__main__":
    main()
