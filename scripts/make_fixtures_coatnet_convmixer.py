"""Make the PyTorch reference fixtures for ppvit's CoAtNet and ConvMixer tests.

Reference transcribed from source 003 (the blog's PyTorch CoAtNet, from
KKKSQJ/DeepLearning, and the official ConvMixer of locuslab/convmixer) for tests only; not part of ppvit.
The only change to the source is that einops' ``rearrange`` is written out with torch ops (einops is not
installed here); module structure, parameter names and math are the source's.

Needs torch; run it only to regenerate the fixtures (the tests read the .npz files with numpy alone):

    .venv-torch/bin/python scripts/make_fixtures_coatnet_convmixer.py

Each fixture holds the source model's state_dict under its PyTorch keys (prefix ``state/``), the model's
reduced configuration (``config/...``), a fixed input ``x`` and the eval-mode output ``y``. Weights and
BatchNorm statistics are randomised (the source initialises the relative-position table and BN to
constants, which would hide key or layout mistakes).
"""
import os
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "fixtures")


# ----------------------------------------------------------------------------------------------------------
# 003: CoAtNet
# ----------------------------------------------------------------------------------------------------------
def conv_3x3_bn(in_c, out_c, image_size, downsample=False):
    stride = 2 if downsample else 1
    return nn.Sequential(nn.Conv2d(in_c, out_c, 3, stride, 1, bias=False), nn.BatchNorm2d(out_c), nn.GELU())


class SE(nn.Module):
    def __init__(self, in_c, out_c, expansion=0.25):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(out_c, int(in_c * expansion), bias=False),
            nn.GELU(),
            nn.Linear(int(in_c * expansion), out_c, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y


class MBConv(nn.Module):
    def __init__(self, in_c, out_c, image_size, downsample=False, expansion=4):
        super().__init__()
        self.downsample = downsample
        stride = 2 if downsample else 1
        hidden_dim = int(in_c * expansion)
        if self.downsample:
            self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.proj = nn.Conv2d(in_c, out_c, 1, 1, 0, bias=False)
        layers = OrderedDict()
        layers.update({"expand_conv": nn.Sequential(
            nn.Conv2d(in_c, hidden_dim, 1, stride, 0, bias=False), nn.BatchNorm2d(hidden_dim), nn.GELU())})
        layers.update({"dw_conv": nn.Sequential(
            nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1, groups=hidden_dim, bias=False),
            nn.BatchNorm2d(hidden_dim), nn.GELU())})
        layers.update({"se": SE(in_c, hidden_dim)})
        layers.update({"pro_conv": nn.Sequential(
            nn.Conv2d(hidden_dim, out_c, 1, 1, 0, bias=False), nn.BatchNorm2d(out_c))})
        self.block = nn.Sequential(layers)

    def forward(self, x):
        if self.downsample:
            return self.proj(self.pool(x)) + self.block(x)
        return x + self.block(x)


class Attention(nn.Module):
    def __init__(self, in_c, out_c, image_size, heads=8, dim_head=32, dropout=0.0):
        super().__init__()
        inner_dim = dim_head * heads
        project_out = not (heads == 1 and dim_head == in_c)
        self.ih, self.iw = image_size if len(image_size) == 2 else (image_size, image_size)
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.relative_bias_table = nn.Parameter(torch.zeros((2 * self.ih - 1) * (2 * self.iw - 1), heads))
        coords = torch.meshgrid((torch.arange(self.ih), torch.arange(self.iw)), indexing="ij")
        coords = torch.flatten(torch.stack(coords), 1)
        relative_coords = coords[:, :, None] - coords[:, None, :]
        relative_coords[0] += self.ih - 1
        relative_coords[1] += self.iw - 1
        relative_coords[0] *= 2 * self.iw - 1
        relative_coords = relative_coords.permute(1, 2, 0)  # rearrange 'c h w -> h w c'
        relative_index = relative_coords.sum(-1).flatten().unsqueeze(1)
        self.register_buffer("relative_index", relative_index)
        self.attend = nn.Softmax(dim=-1)
        self.qkv = nn.Linear(in_c, inner_dim * 3, bias=False)
        self.proj = nn.Sequential(nn.Linear(inner_dim, out_c), nn.Dropout(dropout)) if project_out else nn.Identity()

    def forward(self, x):
        qkv = self.qkv(x).chunk(3, dim=-1)
        # rearrange 'b n (h d) -> b h n d'
        q, k, v = map(lambda t: t.reshape(t.shape[0], t.shape[1], self.heads, -1).transpose(1, 2), qkv)
        dots = torch.matmul(q, k.transpose(-1, -2)) * self.scale
        relative_bias = self.relative_bias_table.gather(0, self.relative_index.repeat(1, self.heads))
        # rearrange '(h w) c -> 1 c h w' with h = w = ih*iw
        n = self.ih * self.iw
        relative_bias = relative_bias.reshape(n, n, self.heads).permute(2, 0, 1).unsqueeze(0)
        dots = dots + relative_bias
        attn = self.attend(dots)
        out = torch.matmul(attn, v)
        out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)  # 'b h n d -> b n (h d)'
        return self.proj(out)


class FFN(nn.Module):
    def __init__(self, dim, hidden_dim, dropout=0.0):
        super().__init__()
        self.ffn = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden_dim, dim), nn.Dropout(dropout))

    def forward(self, x):
        return self.ffn(x)


def _tokens(x):  # rearrange 'b c h w -> b (h w) c'
    return x.flatten(2).transpose(1, 2)


def _image(x, h, w):  # rearrange 'b (h w) c -> b c h w'
    return x.transpose(1, 2).reshape(x.shape[0], -1, h, w)


class Transformer(nn.Module):
    def __init__(self, in_c, out_c, image_size, heads=8, dim_head=32, downsample=False, dropout=0.0,
                 expansion=4, norm_layer=nn.LayerNorm):
        super().__init__()
        self.downsample = downsample
        hidden_dim = int(in_c * expansion)
        self.ih, self.iw = image_size
        if self.downsample:
            self.pool1 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.pool2 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
            self.proj = nn.Conv2d(in_c, out_c, 1, 1, 0, bias=False)
        self.attn = Attention(in_c, out_c, image_size, heads, dim_head, dropout)
        self.ffn = FFN(out_c, hidden_dim)
        self.norm1 = norm_layer(in_c)
        self.norm2 = norm_layer(out_c)

    def forward(self, x):
        x1 = self.pool1(x) if self.downsample else x
        x1 = _tokens(x1)
        x1 = self.attn(self.norm1(x1))
        x1 = _image(x1, self.ih, self.iw)
        x2 = self.proj(self.pool2(x)) if self.downsample else x
        x3 = x1 + x2
        x4 = _tokens(x3)
        x4 = self.ffn(self.norm2(x4))
        x4 = _image(x4, self.ih, self.iw)
        return x3 + x4


class CoAtNet(nn.Module):
    def __init__(self, image_size=(224, 224), in_channels=3, num_blocks=(2, 2, 3, 5, 2),
                 channels=(64, 96, 192, 384, 768), num_classes=1000, block_types=("C", "C", "T", "T")):
        super().__init__()
        ih, iw = image_size
        block = {"C": MBConv, "T": Transformer}
        self.s0 = self._make_layer(conv_3x3_bn, in_channels, channels[0], num_blocks[0], (ih // 2, iw // 2))
        self.s1 = self._make_layer(block[block_types[0]], channels[0], channels[1], num_blocks[1], (ih // 4, iw // 4))
        self.s2 = self._make_layer(block[block_types[1]], channels[1], channels[2], num_blocks[2], (ih // 8, iw // 8))
        self.s3 = self._make_layer(block[block_types[2]], channels[2], channels[3], num_blocks[3], (ih // 16, iw // 16))
        self.s4 = self._make_layer(block[block_types[3]], channels[3], channels[4], num_blocks[4], (ih // 32, iw // 32))
        self.pool = nn.AvgPool2d(ih // 32, 1)
        self.fc = nn.Linear(channels[-1], num_classes, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def forward(self, x):
        x = self.s4(self.s3(self.s2(self.s1(self.s0(x)))))
        x = self.pool(x)
        return self.fc(torch.flatten(x, 1))

    def _make_layer(self, block, in_c, out_c, depth, image_size):
        layers = nn.ModuleList([])
        for i in range(depth):
            if i == 0:
                layers.append(block(in_c, out_c, image_size, downsample=True))
            else:
                layers.append(block(out_c, out_c, image_size, downsample=False))
        return nn.Sequential(*layers)


# ----------------------------------------------------------------------------------------------------------
# 003 / locuslab: ConvMixer (the flat nn.Sequential), and timm's layout of the same network
# ----------------------------------------------------------------------------------------------------------
class Residual(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x) + x


def ConvMixer(dim, depth, kernel_size=9, patch_size=7, n_classes=1000, act=nn.GELU):
    return nn.Sequential(
        nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size),
        act(),
        nn.BatchNorm2d(dim),
        *[nn.Sequential(
            Residual(nn.Sequential(
                nn.Conv2d(dim, dim, kernel_size, groups=dim, padding="same"),
                act(),
                nn.BatchNorm2d(dim),
            )),
            nn.Conv2d(dim, dim, kernel_size=1),
            act(),
            nn.BatchNorm2d(dim),
        ) for _ in range(depth)],
        nn.AdaptiveAvgPool2d((1, 1)),
        nn.Flatten(),
        nn.Linear(dim, n_classes),
    )


def ConvMixerCompact(h, d, k, p, n):
    """003's second, 280-character ConvMixer (same network, other nesting: other checkpoint keys)."""
    S, C = nn.Sequential, nn.Conv2d
    A = lambda x: S(x, nn.GELU(), nn.BatchNorm2d(h))  # noqa: E731
    R = type("R", (S,), {"forward": lambda s, x: s[0](x) + x})
    return S(A(C(3, h, p, p)), *[S(R(A(C(h, h, k, groups=h, padding=k // 2))), A(C(h, h, 1))) for _ in range(d)],
             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(h, n))


class ConvMixerTimm(nn.Module):
    """timm's ConvMixer module layout (``stem``, ``blocks``, ``head``), as timm's hub weights use it."""

    def __init__(self, dim, depth, kernel_size=9, patch_size=7, num_classes=1000, act=nn.GELU):
        super().__init__()
        flat = ConvMixer(dim, depth, kernel_size, patch_size, num_classes, act)
        self.stem = nn.Sequential(*flat[:3])
        self.blocks = nn.Sequential(*flat[3:3 + depth])
        self.pooling = nn.Sequential(*flat[3 + depth:5 + depth])
        self.head = flat[5 + depth]

    def forward(self, x):
        return self.head(self.pooling(self.blocks(self.stem(x))))


# ----------------------------------------------------------------------------------------------------------
def randomize(model, seed):
    """Random weights and BN statistics so a wrong key, transpose or index shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("relative_bias_table"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif p.ndim == 1 and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))  # norm weights around 1
            elif p.ndim == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
    return model


def save(name, model, x, config):
    model.eval()
    with torch.no_grad():
        y = model(x)
    arrays = {f"state/{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    arrays.update({f"config/{k}": np.asarray(v) for k, v in config.items()})
    arrays["x"] = x.numpy()
    arrays["y"] = y.numpy()
    path = os.path.join(OUT, f"{name}.npz")
    np.savez_compressed(path, **arrays)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{path}: {os.path.getsize(path) / 1024:.0f} KB, {n_params} params, output {tuple(y.shape)}")


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)

    # CoAtNet at 64x64 (transformer stages at 4x4 and 2x2: non-trivial relative positions); two blocks in
    # s1 and s3 so the downsampling and the plain block of both kinds are covered.
    cfg = dict(image_size=64, num_blocks=[1, 2, 1, 2, 1], channels=[8, 8, 16, 16, 16], num_classes=10)
    model = randomize(CoAtNet((64, 64), 3, cfg["num_blocks"], cfg["channels"], cfg["num_classes"]), 1)
    save("coatnet_tiny64", model, torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(11)), cfg)

    # ConvMixer, official flat layout (003 / locuslab), GELU, k5 p2 as in the CIFAR model
    cfg = dict(dim=16, depth=2, kernel_size=5, patch_size=2, num_classes=10, act="gelu")
    model = randomize(ConvMixer(16, 2, 5, 2, 10), 2)
    save("convmixer_flat_gelu", model, torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(12)), cfg)

    # ConvMixer, timm layout with ReLU (as convmixer_768_32), k7 p7 on a 28x28 input
    cfg = dict(dim=16, depth=2, kernel_size=7, patch_size=7, num_classes=10, act="relu")
    model = randomize(ConvMixerTimm(16, 2, 7, 7, 10, act=nn.ReLU), 3)
    save("convmixer_timm_relu", model, torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(13)), cfg)

    # ConvMixer, 003's compact one-liner layout, k3 p4 on a 24x24 input
    cfg = dict(dim=16, depth=2, kernel_size=3, patch_size=4, num_classes=10, act="gelu")
    model = randomize(ConvMixerCompact(16, 2, 3, 4, 10), 4)
    save("convmixer_compact_gelu", model, torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(14)), cfg)

    # full-size parameter counts, for the record (the tests assert the same figures; built on the meta
    # device, so no memory is allocated)
    with torch.device("meta"):
        for i, (blocks, chans) in enumerate([((2, 2, 3, 5, 2), (64, 96, 192, 384, 768)),
                                             ((2, 2, 6, 14, 2), (64, 96, 192, 384, 768)),
                                             ((2, 2, 6, 14, 2), (128, 128, 256, 512, 1026)),
                                             ((2, 2, 6, 14, 2), (192, 192, 384, 768, 1536)),
                                             ((2, 2, 12, 28, 2), (192, 192, 384, 768, 1536))]):
            model = CoAtNet((224, 224), 3, blocks, chans, 1000)
            print(f"coatnet_{i} params:", sum(p.numel() for p in model.parameters()))
    for name, args in {"convmixer_1536_20": (1536, 20, 9, 7), "convmixer_768_32": (768, 32, 7, 7),
                       "convmixer_1024_20_ks9_p14": (1024, 20, 9, 14), "convmixer_256_8": (256, 8, 5, 2)}.items():
        with torch.device("meta"):
            print(name, "params:", sum(p.numel() for p in ConvMixer(*args).parameters()))


if __name__ == "__main__":
    main()
