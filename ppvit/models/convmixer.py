"""ConvMixer: Patches Are All You Need? (Trockman & Kolter, ICLR 2022).

The network of source 003 and of the official code (locuslab/convmixer, locuslab/convmixer-cifar10):
a patch-embedding conv, ``depth`` blocks of [residual depthwise conv, pointwise conv], each conv followed
by the activation and BatchNorm, global average pooling and a Linear classifier. Like the official code,
the model *is* one flat ``nn.Sequential``, so its state_dict keys are the official ones (``0.weight``,
``2._mean``, ``3.0.fn.0.weight``, ..., ``{depth + 5}.weight`` for the classifier) and official PyTorch
checkpoints convert by renaming. ``checkpoint_filter_fn`` also reads timm's layout (``stem``/``blocks``/
``head``) and the nesting of 003's 280-character version.

``drop_path_rate`` (stochastic depth on the residual depthwise branch) and ``drop_rate`` (dropout before
the classifier) are ppvit's additions: no parameters, default 0. Any input size works (at least one patch);
``img_size`` is the nominal size only.

Its BatchNorms are ``layers.PostActBatchNorm2D`` (``nn.BatchNorm2D``), which exports run as the same per-channel
affine in a 1x1 depthwise conv (``ppvit.deploy.rewrites``), which oneDNN's bf16 predictor keeps in bf16 (its
batch_norm runs in fp32 between reorders, and a BN after GELU fuses into nothing).
"""
import re

import numpy as np
import paddle.nn as nn
import paddle.nn.functional as F

from ..io import unwrap_state_dict
from .features import feature_take_indices, format_map
from .helpers import apply_key_map
from .layers import (Conv2D, DepthwiseConv2D, DropPath, GELU, Linear, PostActBatchNorm2D, drop_path_rates,
                     to_2tuple)
from .registry import ModelCfg, register_model

__all__ = ["ConvMixer", "checkpoint_filter_fn", "torch_key_map"]


class Residual(nn.Layer):
    """``fn(x) + x`` (the official ``Residual``; its only parameters are ``fn``'s, hence the ``.fn.`` keys)."""

    def __init__(self, fn, drop_path=0.0):
        super().__init__()
        self.fn = fn
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        return self.drop_path(self.fn(x)) + x


class ConvMixer(nn.Sequential):
    """Flat Sequential: [0] patch conv, [1] act, [2] BN, [3 .. depth+2] blocks, [depth+3] pool,
    [depth+4] flatten, [depth+5] classifier (``head_names``)."""

    def __init__(self, dim, depth, kernel_size=9, patch_size=7, in_chans=3, num_classes=1000, act_layer=GELU,
                 drop_rate=0.0, drop_path_rate=0.0, img_size=224):
        dpr = drop_path_rates(drop_path_rate, [depth])[0]
        blocks = [
            nn.Sequential(
                Residual(nn.Sequential(
                    DepthwiseConv2D(dim, dim, kernel_size, groups=dim, padding="same"),
                    act_layer(),
                    PostActBatchNorm2D(dim),
                ), drop_path=dpr[i]),
                Conv2D(dim, dim, 1),
                act_layer(),
                PostActBatchNorm2D(dim),
            )
            for i in range(depth)
        ]
        super().__init__(
            Conv2D(in_chans, dim, patch_size, stride=patch_size),
            act_layer(),
            PostActBatchNorm2D(dim),
            *blocks,
            nn.AdaptiveAvgPool2D(1),
            nn.Flatten(),
            Linear(dim, num_classes) if num_classes > 0 else nn.Identity(),
        )
        self.num_features = dim
        self.num_classes = num_classes
        self.img_size, self.in_chans = to_2tuple(img_size), in_chans
        self.drop_rate = float(drop_rate)  # applied functionally: a Dropout layer would shift the keys
        self.depth = depth
        self.head_index = depth + 5
        self.head_names = (str(self.head_index),)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        # PyTorch's default init, which the official training used: U(+-1/sqrt(fan_in)) for conv and
        # Linear weights and biases (Paddle's defaults differ: normal convs, Xavier Linear, zero biases)
        if isinstance(m, (nn.Conv2D, nn.Linear)):
            w = m.weight
            fan_in = w.shape[0] if isinstance(m, nn.Linear) else int(np.prod(w.shape[1:]))
            bound = 1.0 / np.sqrt(fan_in)
            nn.initializer.Uniform(-bound, bound)(w)
            if m.bias is not None:
                nn.initializer.Uniform(-bound, bound)(m.bias)

    def no_weight_decay(self):
        return set()

    def get_classifier(self):
        return self[self.head_index]

    def reset_classifier(self, num_classes):
        self.num_classes = num_classes
        head = Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights(head)
        self[str(self.head_index)] = head

    def forward_features(self, x):
        for layer in list(self._sub_layers.values())[:self.head_index]:
            x = layer(x)
        return x  # B, dim (pooled and flattened)

    def forward_head(self, x, pre_logits=False):
        x = F.dropout(x, self.drop_rate, training=self.training) if self.drop_rate > 0 else x
        return x if pre_logits else self[self.head_index](x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    @property
    def feature_info(self):
        """timm's feature levels: every block's map, at the patch stride."""
        stride = self[0]._stride
        stride = int(stride[0] if isinstance(stride, (list, tuple)) else stride)
        return [dict(num_chs=self.num_features, reduction=stride, module=str(3 + i)) for i in range(self.depth)]

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """timm's ``forward_intermediates`` (``ppvit.models.features``): the outputs of the blocks in
        ``indices`` (None: all; an int n: the last n), each [B, dim, H / patch, W / patch] (NCHW). ``norm`` has
        no effect (no final norm). Returns the list (``intermediates_only``), else ``(forward_features(x),
        list)``; with ``stop_early`` no block after the last one taken runs (the first item is then its map)."""
        take, last = feature_take_indices(self.depth, indices)
        layers = list(self._sub_layers.values())
        for layer in layers[:3]:  # patch conv, act, BN
            x = layer(x)
        intermediates = []
        for i in range(last + 1 if stop_early else self.depth):
            x = layers[3 + i](x)
            if i in take:
                intermediates.append(format_map(x, output_fmt))
        if intermediates_only:
            return intermediates
        if not stop_early or last == self.depth - 1:
            x = layers[self.depth + 4](layers[self.depth + 3](x))  # pool, flatten: forward_features
        return x, intermediates


# --------------------------------------------------------------------------------------------------------
# PyTorch -> Paddle keys, for the three layouts of the same network. Every layout: BatchNorm statistics get
# Paddle's names, the BN step counter is dropped, the classifier (the only nn.Linear) is transposed.
# --------------------------------------------------------------------------------------------------------
_COMMON_RENAME = [(r"\.running_mean$", "._mean"), (r"\.running_var$", "._variance")]
_DROP = [r"\.num_batches_tracked$"]

# how to recognise each layout, and how to read its depth: (marker key, regex capturing a block index)
_LAYOUTS = {
    "official": ("0.weight", r"^(\d+)\.0\.fn\.0\.weight$"),  # 003 / locuslab: the flat Sequential (ppvit's own)
    "timm": ("stem.0.weight", r"^blocks\.(\d+)\.0\.fn\.0\.weight$"),  # timm: stem / blocks / head
    "compact": ("0.0.weight", r"^(\d+)\.0\.0\.0\.weight$"),  # 003's 280-character ConvMixer(h, d, k, p, n)
}


def torch_key_map(layout, depth):
    """Key map (drop / rename / transpose, see ``helpers.apply_key_map``) of one layout at one depth."""
    head = depth + 5
    rename = {
        "official": [],
        "timm": [
            (r"^stem\.", ""),  # stem.0/stem.2 are 0/2
            (r"^blocks\.(\d+)\.", lambda m: f"{int(m[1]) + 3}."),
            (r"^head\.", f"{head}."),
        ],
        "compact": [
            (r"^0\.([02])\.", r"\1."),  # stem S(conv, act, BN) flattened into 0, 1, 2
            # block S(R(S(dwconv, act, BN)), S(pwconv, act, BN)) at 1..depth
            (r"^(\d+)\.0\.0\.([02])\.", lambda m: f"{int(m[1]) + 2}.0.fn.{m[2]}."),
            (r"^(\d+)\.1\.([02])\.", lambda m: f"{int(m[1]) + 2}.{1 if m[2] == '0' else 3}."),
            (rf"^{depth + 3}\.", f"{head}."),  # classifier
        ],
    }[layout]
    return {
        "drop": _DROP,
        "rename": [(r"^module\.", "")] + rename + _COMMON_RENAME,
        "transpose": [rf"^{head}\.weight$"],
    }


def detect_layout(state_dict):
    """(layout name, depth) of a PyTorch ConvMixer state_dict."""
    keys = [re.sub(r"^module\.", "", k) for k in state_dict]
    for layout, (marker, block) in _LAYOUTS.items():
        if marker in keys:
            depth = len({m[1] for m in (re.match(block, k) for k in keys) if m})
            return layout, depth
    raise ValueError("not a ConvMixer state_dict: found none of "
                     + ", ".join(marker for marker, _ in _LAYOUTS.values()))


def checkpoint_filter_fn(state_dict):
    """PyTorch ConvMixer ``state_dict`` ({name: array-like}, official, timm or 003-compact layout, detected
    from its keys) -> {Paddle name: np.ndarray}."""
    state_dict = unwrap_state_dict(state_dict)  # a whole training checkpoint is accepted too
    layout, depth = detect_layout(state_dict)
    return apply_key_map(state_dict, torch_key_map(layout, depth))


# --------------------------------------------------------------------------------------------------------
# variants: constructor arguments per name, metadata per name, one short registered function each
# --------------------------------------------------------------------------------------------------------
_VARIANTS = {
    "convmixer_1536_20": dict(dim=1536, depth=20, kernel_size=9, patch_size=7, act_layer=GELU),
    "convmixer_768_32": dict(dim=768, depth=32, kernel_size=7, patch_size=7, act_layer=nn.ReLU),  # paper's ReLU
    "convmixer_1024_20_ks9_p14": dict(dim=1024, depth=20, kernel_size=9, patch_size=14, act_layer=GELU),
    # locuslab/convmixer-cifar10's defaults (32x32 inputs, 10 classes)
    "convmixer_256_8": dict(dim=256, depth=8, kernel_size=5, patch_size=2, act_layer=GELU, num_classes=10,
                            img_size=32),
}

_PAPER = "https://arxiv.org/abs/2201.09792"


def _imagenet_cfg(depth):
    # locuslab/convmixer trains with timm's recipe: bicubic, crop 0.96 (its README's --crop-pct)
    return ModelCfg(input_size=(3, 224, 224), interpolation="bicubic", crop_pct=0.96, num_classes=1000,
                    classifier=str(depth + 5), first_conv="0",
                    source="https://github.com/locuslab/convmixer (source 003)", paper=_PAPER,
                    checkpoint_filter_fn=checkpoint_filter_fn)


# ImageNet statistics (the ModelCfg default), as every ppvit recipe trains it: locuslab's script normalised
# with CIFAR-10's own statistics, but no weights of it are published, and a cfg that disagreed with the data
# pipeline would make an export from Python normalise differently from training
_CIFAR_CFG = ModelCfg(
    input_size=(3, 32, 32), interpolation="bilinear", crop_pct=1.0,
    num_classes=10, classifier=str(8 + 5), first_conv="0",
    source="https://github.com/locuslab/convmixer-cifar10 (source 003)", paper=_PAPER,
    checkpoint_filter_fn=checkpoint_filter_fn)


def _create(name, **kwargs):
    return ConvMixer(**{**_VARIANTS[name], **kwargs})


@register_model(cfg=_imagenet_cfg(20))
def convmixer_1536_20(**kwargs):
    """ConvMixer-1536/20 (kernel 9, patch 7, GELU): 51.63M params, 224x224 input."""
    return _create("convmixer_1536_20", **kwargs)


@register_model(cfg=_imagenet_cfg(32))
def convmixer_768_32(**kwargs):
    """ConvMixer-768/32 (kernel 7, patch 7, ReLU): 21.11M params, 224x224 input."""
    return _create("convmixer_768_32", **kwargs)


@register_model(cfg=_imagenet_cfg(20))
def convmixer_1024_20_ks9_p14(**kwargs):
    """ConvMixer-1024/20 (kernel 9, patch 14, GELU): 24.38M params, 224x224 input."""
    return _create("convmixer_1024_20_ks9_p14", **kwargs)


@register_model(cfg=_CIFAR_CFG)
def convmixer_256_8(**kwargs):
    """ConvMixer-256/8 (kernel 5, patch 2) of locuslab/convmixer-cifar10: 0.59M params, 10 classes, 32x32."""
    return _create("convmixer_256_8", **kwargs)
