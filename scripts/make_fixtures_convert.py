"""Make the PyTorch fixtures of tests/test_convert.py (needs torch; CI only reads the files written here).

    .venv-torch/bin/python scripts/make_fixtures_convert.py

Reference transcribed from the official PyTorch code for tests only; not part of ppvit:
- ConViT: facebookresearch/convit ``convit.py`` (the same modules and keys as timm's ``convit.py``);
- DilateFormer: JIAOJIAYUASD/dilateformer ``models/dilateformer.py`` (its defaults: overlapping conv stem,
  ``conv3_2`` patch merging, a conditional position encoding per block).
Module names and math are the sources'; only what reduced sizes do not use (hybrid backbones, the other
stem/merging options, attention-map helpers) is left out.

Writes into tests/fixtures/:
- convit_official_tiny.npz / dilateformer_official_tiny.npz: a reduced model's state_dict under its PyTorch
  keys (``state/<key>``), the build arguments (``config/<name>``), an input ``x`` and the eval output ``y``;
  weights, LayerNorm/BatchNorm parameters and BN statistics randomised so every key matters.
- ``*.pth``: ``torch.save`` files (zip format) of those two state dicts and of the other families'
  fixtures (conv2former_tiny, coatnet_tiny64, convmixer_flat_gelu), the ConViT one wrapped as
  ``{"model": state_dict}`` like the DeiT-style training scripts save it. The tests read them without torch.
- official_key_shapes.json: keys and shapes of the full-size official convit_tiny / dilateformer_tiny.
- convmixer_flat_gelu_legacy.pth: the same tensors in PyTorch's legacy (pre-1.6) format.
- deit_style_checkpoint{,_legacy}.pth/.npz: a whole training checkpoint of a toy model (weights, optimizer state,
  argparse.Namespace, epoch), for the reader's unwrapping of non-tensor objects.
"""
import math
import os
from collections import OrderedDict
from functools import partial

import numpy as np
import torch
import torch.nn as nn

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures")


class Mlp(nn.Module):
    def __init__(self, in_features, hidden_features, act_layer=nn.GELU, drop=0.0):
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


# ----------------------------------------------------------------------------------------------------------
# ConViT (facebookresearch/convit, timm)
# ----------------------------------------------------------------------------------------------------------
class GPSA(nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=False, locality_strength=1.0):
        super().__init__()
        self.num_heads = num_heads
        self.dim = dim
        self.scale = (dim // num_heads) ** -0.5
        self.locality_strength = locality_strength
        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.pos_proj = nn.Linear(3, num_heads)
        self.gating_param = nn.Parameter(torch.ones(num_heads))
        self.rel_indices = None  # a plain attribute in both sources: not in the state_dict

    def get_rel_indices(self, num_patches):
        img_size = int(num_patches ** 0.5)
        rel_indices = torch.zeros(1, num_patches, num_patches, 3)
        ind = torch.arange(img_size).view(1, -1) - torch.arange(img_size).view(-1, 1)
        indx = ind.repeat(img_size, img_size)
        indy = ind.repeat_interleave(img_size, dim=0).repeat_interleave(img_size, dim=1)
        rel_indices[:, :, :, 2] = (indx ** 2 + indy ** 2).unsqueeze(0)
        rel_indices[:, :, :, 1] = indy.unsqueeze(0)
        rel_indices[:, :, :, 0] = indx.unsqueeze(0)
        return rel_indices

    def forward(self, x):
        B, N, C = x.shape
        if self.rel_indices is None or self.rel_indices.shape[1] != N:
            self.rel_indices = self.get_rel_indices(N)
        qk = self.qk(x).reshape(B, N, 2, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = qk[0], qk[1]
        pos_score = self.pos_proj(self.rel_indices.expand(B, -1, -1, -1)).permute(0, 3, 1, 2)
        patch_score = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        pos_score = pos_score.softmax(dim=-1)
        gating = self.gating_param.view(1, -1, 1, 1)
        attn = (1.0 - torch.sigmoid(gating)) * patch_score + torch.sigmoid(gating) * pos_score
        attn = attn / attn.sum(dim=-1).unsqueeze(-1)
        v = self.v(x).reshape(B, N, self.num_heads, C // self.num_heads).permute(0, 2, 1, 3)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class MHSA(nn.Module):
    def __init__(self, dim, num_heads=8, qkv_bias=False):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class ConViTBlock(nn.Module):
    def __init__(self, dim, num_heads, mlp_ratio, qkv_bias, norm_layer, use_gpsa, **kwargs):
        super().__init__()
        self.norm1 = norm_layer(dim)
        self.attn = GPSA(dim, num_heads, qkv_bias, **kwargs) if use_gpsa else MHSA(dim, num_heads, qkv_bias)
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, img_size, patch_size, in_chans, embed_dim):
        super().__init__()
        self.num_patches = (img_size // patch_size) ** 2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class ConViT(nn.Module):
    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=48, depth=12,
                 num_heads=12, mlp_ratio=4.0, qkv_bias=False, local_up_to_layer=10, locality_strength=1.0):
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        embed_dim *= num_heads
        self.local_up_to_layer = local_up_to_layer
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, embed_dim))
        self.blocks = nn.ModuleList([
            ConViTBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, norm_layer, use_gpsa=True,
                        locality_strength=locality_strength)
            if i < local_up_to_layer else
            ConViTBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, norm_layer, use_gpsa=False)
            for i in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, x):
        B = x.shape[0]
        x = self.patch_embed(x) + self.pos_embed
        cls_tokens = self.cls_token.expand(B, -1, -1)
        for u, blk in enumerate(self.blocks):
            if u == self.local_up_to_layer:
                x = torch.cat((cls_tokens, x), dim=1)
            x = blk(x)
        return self.head(self.norm(x)[:, 0])


# ----------------------------------------------------------------------------------------------------------
# DilateFormer (JIAOJIAYUASD/dilateformer)
# ----------------------------------------------------------------------------------------------------------
class DilateAttention(nn.Module):
    def __init__(self, head_dim, qk_scale=None, kernel_size=3, dilation=1):
        super().__init__()
        self.head_dim = head_dim
        self.scale = qk_scale or head_dim ** -0.5
        self.kernel_size = kernel_size
        self.unfold = nn.Unfold(kernel_size, dilation, dilation * (kernel_size - 1) // 2, 1)

    def forward(self, q, k, v):
        B, d, H, W = q.shape
        kk = self.kernel_size * self.kernel_size
        q = q.reshape([B, d // self.head_dim, self.head_dim, 1, H * W]).permute(0, 1, 4, 3, 2)
        k = self.unfold(k).reshape([B, d // self.head_dim, self.head_dim, kk, H * W]).permute(0, 1, 4, 2, 3)
        attn = ((q @ k) * self.scale).softmax(dim=-1)
        v = self.unfold(v).reshape([B, d // self.head_dim, self.head_dim, kk, H * W]).permute(0, 1, 4, 3, 2)
        return (attn @ v).transpose(1, 2).reshape(B, H, W, d)


class MultiDilatelocalAttention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias, kernel_size, dilation):
        super().__init__()
        self.num_dilation = len(dilation)
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=qkv_bias)
        self.dilate_attention = nn.ModuleList(
            [DilateAttention(dim // num_heads, None, kernel_size, r) for r in dilation])
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, H, W, C = x.shape
        x = x.permute(0, 3, 1, 2)
        qkv = self.qkv(x).reshape(B, 3, self.num_dilation, C // self.num_dilation, H, W).permute(2, 1, 0, 3, 4, 5)
        x = x.reshape(B, self.num_dilation, C // self.num_dilation, H, W).permute(1, 0, 3, 4, 2)
        for i in range(self.num_dilation):
            x[i] = self.dilate_attention[i](qkv[i][0], qkv[i][1], qkv[i][2])
        return self.proj(x.permute(1, 2, 3, 0, 4).reshape(B, H, W, C))


class GlobalAttention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, H, W, C = x.shape
        qkv = self.qkv(x).reshape(B, H * W, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, H, W, C))


class DFBlock(nn.Module):
    """DilateBlock / GlobalBlock with cpe_per_block=True (the official default)."""

    def __init__(self, dim, attn):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * 4.0))

    def forward(self, x):
        x = x + self.pos_embed(x)
        x = x.permute(0, 2, 3, 1)
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return x.permute(0, 3, 1, 2)


class PatchMerging(nn.Module):
    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, 2, 1), nn.BatchNorm2d(out_channels))

    def forward(self, x):
        return self.proj(x)


class Stage(nn.Module):
    def __init__(self, blocks, downsample):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x)


class Dilateformer(nn.Module):
    def __init__(self, img_size=224, in_chans=3, num_classes=1000, embed_dim=96, depths=(2, 2, 6, 2),
                 num_heads=(3, 6, 12, 24), kernel_size=3, dilation=(1, 2, 3), qkv_bias=True,
                 dilate_attention=(True, True, False, False), downsamples=(True, True, True, False)):
        super().__init__()
        hidden = 16
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Sequential(  # overlapping stem, as the official default
            nn.Conv2d(in_chans, hidden, 3, 1, 1, bias=False), nn.BatchNorm2d(hidden), nn.GELU(),
            nn.Conv2d(hidden, hidden * 2, 3, 2, 1, bias=False), nn.BatchNorm2d(hidden * 2), nn.GELU(),
            nn.Conv2d(hidden * 2, hidden * 4, 3, 1, 1, bias=False), nn.BatchNorm2d(hidden * 4), nn.GELU(),
            nn.Conv2d(hidden * 4, embed_dim, 3, 2, 1, bias=False))
        self.stages = nn.ModuleList()
        for i in range(len(depths)):
            dim = int(embed_dim * 2 ** i)
            blocks = [DFBlock(dim, MultiDilatelocalAttention(dim, num_heads[i], qkv_bias, kernel_size, dilation)
                              if dilate_attention[i] else GlobalAttention(dim, num_heads[i], qkv_bias))
                      for _ in range(depths[i])]
            down = PatchMerging(dim, dim * 2) if downsamples[i] else nn.Identity()
            self.stages.append(Stage(blocks, down))
        self.num_features = int(embed_dim * 2 ** (len(depths) - 1))
        self.norm = nn.LayerNorm(self.num_features, eps=1e-6)
        self.avgpool = nn.AdaptiveAvgPool1d(1)
        self.head = nn.Linear(self.num_features, num_classes)

    def forward(self, x):
        x = self.patch_embed.proj(x)
        for stage in self.stages:
            x = stage(x)
        x = self.norm(x.flatten(2).transpose(1, 2))
        x = torch.flatten(self.avgpool(x.transpose(1, 2)), 1)
        return self.head(x)


# ----------------------------------------------------------------------------------------------------------
def _randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 1
            std = 1.0 / math.sqrt(fan_in) if p.dim() > 1 else 0.1
            noise = torch.randn(p.shape, generator=g) * std
            p.copy_((1.0 + noise) if name.endswith(("norm1.weight", "norm2.weight", "norm.weight")) else noise)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("num_batches_tracked"):
                b.fill_(123)
        for name, m in model.named_modules():  # BN affine parameters around identity
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1.0 + torch.randn(m.weight.shape, generator=g) * 0.1)


def _write(name, model, config, x_shape, seed, wrap=None):
    torch.manual_seed(seed)
    _randomise(model, seed)
    model.eval()
    x = torch.randn(*x_shape)
    with torch.no_grad():
        y = model(x)
    sd = model.state_dict()
    arrays = {f"state/{k}": v.numpy() for k, v in sd.items()}
    arrays.update({f"config/{k}": np.asarray(v) for k, v in config.items()})
    np.savez_compressed(os.path.join(OUT, f"{name}.npz"), x=x.numpy(), y=y.numpy(), **arrays)
    torch.save({wrap: sd} if wrap else sd, os.path.join(OUT, f"{name}.pth"))
    print(name, len(sd), "tensors, y", tuple(y.shape))


def _pth_from_npz(name, prefix, legacy=False):
    data = np.load(os.path.join(OUT, f"{name}.npz"))
    sd = OrderedDict((k[len(prefix):], torch.from_numpy(data[k])) for k in data.files if k.startswith(prefix))
    out = f"{name}_legacy.pth" if legacy else f"{name}.pth"
    torch.save(sd, os.path.join(OUT, out), _use_new_zipfile_serialization=not legacy)
    print(out, len(sd), "tensors (from npz)")


CONVIT_CFG = dict(img_size=32, patch_size=8, embed_dim=8, depth=3, num_heads=4, local_up_to_layer=2,
                  num_classes=7)
DILATEFORMER_CFG = dict(img_size=64, embed_dim=6, depths=(1, 1, 1, 1), num_heads=(3, 3, 3, 6), num_classes=7)


def _deit_style_checkpoint():
    """What a DeiT-style main.py saves (ConViT and DilateFormer train with one): weights under "model",
    plus optimizer state, an argparse.Namespace, a LR-scheduler dict and the epoch."""
    import argparse

    torch.manual_seed(7)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    model.eval()
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(),
            "lr_scheduler": {"last_epoch": 3, "base_lrs": [1e-3]}, "epoch": 3,
            "args": argparse.Namespace(model="tiny", lr=1e-3, input_size=224)}
    torch.save(ckpt, os.path.join(OUT, "deit_style_checkpoint.pth"))
    torch.save(ckpt, os.path.join(OUT, "deit_style_checkpoint_legacy.pth"), _use_new_zipfile_serialization=False)
    np.savez(os.path.join(OUT, "deit_style_checkpoint.npz"),
             **{f"state/{k}": v.numpy() for k, v in model.state_dict().items()})
    print("deit_style_checkpoint", len(model.state_dict()), "tensors")


def _full_size_shapes():
    """Keys and shapes of the full-size official convit_tiny and dilateformer_tiny state dicts (ImageNet,
    1000 classes), for the test that the key maps cover the real checkpoints, not only reduced ones."""
    import json

    shapes = {
        "convit_tiny": ConViT(embed_dim=48, num_heads=4, local_up_to_layer=10),
        "dilateformer_t": Dilateformer(embed_dim=72, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24)),
    }
    out = {name: {k: list(v.shape) for k, v in m.state_dict().items()} for name, m in shapes.items()}
    with open(os.path.join(OUT, "official_key_shapes.json"), "w") as f:
        json.dump(out, f, indent=0)
    print("official_key_shapes", {k: len(v) for k, v in out.items()})


def main():
    os.makedirs(OUT, exist_ok=True)
    _write("convit_official_tiny", ConViT(**CONVIT_CFG), CONVIT_CFG, (2, 3, 32, 32), 5, wrap="model")
    _write("dilateformer_official_tiny", Dilateformer(**DILATEFORMER_CFG), DILATEFORMER_CFG, (2, 3, 64, 64), 6)
    _pth_from_npz("conv2former_tiny", "param/")
    _pth_from_npz("coatnet_tiny64", "state/")
    _pth_from_npz("convmixer_flat_gelu", "state/")
    _pth_from_npz("convmixer_flat_gelu", "state/", legacy=True)  # torch < 1.6's format
    _deit_style_checkpoint()
    _full_size_shapes()


if __name__ == "__main__":
    main()
