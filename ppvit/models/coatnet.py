"""CoAtNet: Marrying Convolution and Attention for All Data Sizes (Dai et al., NeurIPS 2021).

The network of source 003 (the blog's PyTorch code, from KKKSQJ/DeepLearning): a 2-layer conv stem
``s0``, then C-C-T-T stages ``s1``..``s4`` of MBConv (with SE) and Transformer blocks whose attention adds a
learned relative-position bias, global average pooling and a bias-free ``fc``. The module tree and every
parameter name are 003's, so a PyTorch checkpoint of that code converts by renaming only
(``checkpoint_filter_fn`` / ``TORCH_KEY_MAP`` below).

As 003 builds it, and so differing from the paper: 8 heads of 32 channels in every attention layer,
``coatnet_2``'s last width is 1026 (not 1024), SE squeezes to a quarter of the block's *input* width, and
downsampling MBConv blocks use a strided 1x1 expansion conv. ``drop_path_rate`` (stochastic depth on the
residual branches) is ppvit's addition; it adds no parameters and defaults to 0.

The relative-position bias is built for one feature-map size, so a model takes only the ``img_size`` it
was built for (a multiple of 32; ``ValueError`` otherwise); weights saved for another size load with their
tables resized (``pretrained_filter_fn``). 003's spellings ``image_size`` and
``in_channels`` are accepted by ``create_model``.
"""
import math

import numpy as np
import paddle
import paddle.nn as nn

from .features import feature_take_indices, format_map
from .helpers import apply_key_map
from .layers import (BatchNorm2D, Conv2D, DepthwiseConv2D, DropPath, GELU, LayerNorm, Linear, check_input_size,
                     drop_path_rates, permute, to_2tuple)
from .pos_embed import resize_rel_pos_bias_table
from .registry import ModelCfg, register_model

__all__ = ["CoAtNet", "checkpoint_filter_fn", "TORCH_KEY_MAP"]


def conv_3x3_bn(in_c, out_c, image_size=None, downsample=False, drop_path=0.0):
    """Stem layer: 3x3 conv (stride 2 when downsampling), BN, GELU (003's ``conv_3x3_bn``)."""
    stride = 2 if downsample else 1
    return nn.Sequential(
        nn.Conv2D(in_c, out_c, 3, stride, 1, bias_attr=False),
        BatchNorm2D(out_c),
        GELU(),
    )


class SE(nn.Layer):
    """Squeeze-excitation on ``out_c`` channels, squeezed to ``int(in_c * expansion)``."""

    def __init__(self, in_c, out_c, expansion=0.25):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2D(1)
        self.fc = nn.Sequential(
            Linear(out_c, int(in_c * expansion), bias_attr=False),
            GELU(),
            Linear(int(in_c * expansion), out_c, bias_attr=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        y = self.fc(self.avg_pool(x).flatten(1))  # B, C
        return x * y.unsqueeze([2, 3])


class MBConv(nn.Layer):
    """Inverted bottleneck: 1x1 expand (x4), 3x3 depthwise, SE, 1x1 project; residual shortcut.

    A downsampling block halves the resolution in its expansion conv, and its shortcut is max-pool + 1x1.
    """

    def __init__(self, in_c, out_c, image_size=None, downsample=False, expansion=4, drop_path=0.0):
        super().__init__()
        self.downsample = downsample
        stride = 2 if downsample else 1
        hidden_dim = int(in_c * expansion)
        if self.downsample:
            self.pool = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
            self.proj = Conv2D(in_c, out_c, 1, 1, 0, bias_attr=False)
        self.block = nn.Sequential(
            ("expand_conv", nn.Sequential(
                Conv2D(in_c, hidden_dim, 1, stride, 0, bias_attr=False),
                BatchNorm2D(hidden_dim),
                GELU(),
            )),
            ("dw_conv", nn.Sequential(
                DepthwiseConv2D(hidden_dim, hidden_dim, 3, 1, 1, groups=hidden_dim, bias_attr=False),
                BatchNorm2D(hidden_dim),
                GELU(),
            )),
            ("se", SE(in_c, hidden_dim)),
            ("pro_conv", nn.Sequential(
                Conv2D(hidden_dim, out_c, 1, 1, 0, bias_attr=False),
                BatchNorm2D(out_c),
            )),
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        shortcut = self.proj(self.pool(x)) if self.downsample else x
        return shortcut + self.drop_path(self.block(x))


def relative_position_index(ih, iw):
    """[ih*iw * ih*iw] index into the ((2ih-1)*(2iw-1))-row bias table, for every (query, key) pair."""
    coords = np.stack(np.meshgrid(np.arange(ih), np.arange(iw), indexing="ij")).reshape(2, -1)  # 2, N
    rel = coords[:, :, None] - coords[:, None, :]  # 2, N, N
    rel[0] += ih - 1
    rel[1] += iw - 1
    rel[0] *= 2 * iw - 1
    return rel.sum(0).reshape(-1).astype("int64")


class Attention(nn.Layer):
    """Multi-head self-attention with a learned relative-position bias (one scalar per offset and head)."""

    def __init__(self, in_c, out_c, image_size, heads=8, dim_head=32, dropout=0.0):
        super().__init__()
        inner_dim = dim_head * heads
        project_out = not (heads == 1 and dim_head == in_c)
        self.ih, self.iw = to_2tuple(image_size)
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.relative_bias_table = self.create_parameter(
            [(2 * self.ih - 1) * (2 * self.iw - 1), heads], default_initializer=nn.initializer.Constant(0.0))
        # derived from the size alone: kept out of the state_dict (PyTorch's 003 code saves it; the key
        # map drops it)
        self.register_buffer(
            "relative_index", paddle.to_tensor(relative_position_index(self.ih, self.iw)), persistable=False)
        self.attend = nn.Softmax(axis=-1)
        self.qkv = Linear(in_c, inner_dim * 3, bias_attr=False)
        self.proj = (nn.Sequential(Linear(inner_dim, out_c), nn.Dropout(dropout)) if project_out
                     else nn.Identity())

    def relative_bias(self):
        n = self.ih * self.iw
        bias = paddle.index_select(self.relative_bias_table, self.relative_index)  # N*N, heads
        return permute(bias.reshape([n, n, self.heads]), [2, 0, 1]).unsqueeze(0)  # 1, heads, N, N

    def forward(self, x):
        # B, N, 3*heads*d -> 3, B, heads, N, d (reshape's 0 copies a dimension: B is unknown when exporting)
        # unbind rather than three slices: its backward is one stack, theirs three zero-filled copies
        q, k, v = permute(self.qkv(x).reshape([0, 0, 3, self.heads, -1]), [2, 0, 3, 1, 4]).unbind(0)
        dots = paddle.matmul(q, k, transpose_y=True) * self.scale  # B, heads, N, N
        attn = self.attend(dots + self.relative_bias())
        out = paddle.matmul(attn, v)  # B, heads, N, d
        out = permute(out, [0, 2, 1, 3]).reshape([0, 0, -1])  # B, N, heads*d
        return self.proj(out)


class FFN(nn.Layer):
    def __init__(self, dim, hidden_dim, dropout=0.0):
        super().__init__()
        self.ffn = nn.Sequential(
            Linear(dim, hidden_dim),
            GELU(),
            nn.Dropout(dropout),
            Linear(hidden_dim, dim),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.ffn(x)


def _tokens(x):
    return permute(x.flatten(2), [0, 2, 1])  # B, C, H, W -> B, H*W, C


def _feature_map(x, h, w):
    return permute(x, [0, 2, 1]).reshape([0, -1, h, w])  # B, H*W, C -> B, C, H, W


class Transformer(nn.Layer):
    """Pre-norm attention + FFN on the flattened map; a downsampling block pools both the attention input
    and the (1x1-projected) shortcut."""

    def __init__(self, in_c, out_c, image_size, heads=8, dim_head=32, downsample=False, dropout=0.0,
                 expansion=4, norm_layer=LayerNorm, drop_path=0.0):
        super().__init__()
        self.downsample = downsample
        hidden_dim = int(in_c * expansion)
        self.ih, self.iw = to_2tuple(image_size)
        if self.downsample:
            self.pool1 = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
            self.pool2 = nn.MaxPool2D(kernel_size=3, stride=2, padding=1)
            self.proj = Conv2D(in_c, out_c, 1, 1, 0, bias_attr=False)
        self.attn = Attention(in_c, out_c, image_size, heads, dim_head, dropout)
        self.ffn = FFN(out_c, hidden_dim)
        self.norm1 = norm_layer(in_c)
        self.norm2 = norm_layer(out_c)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        x1 = self.pool1(x) if self.downsample else x
        x1 = _feature_map(self.attn(self.norm1(_tokens(x1))), self.ih, self.iw)
        shortcut = self.proj(self.pool2(x)) if self.downsample else x
        x = shortcut + self.drop_path(x1)
        x2 = _feature_map(self.ffn(self.norm2(_tokens(x))), self.ih, self.iw)
        return x + self.drop_path(x2)


_BLOCKS = {"C": MBConv, "T": Transformer}


class CoAtNet(nn.Layer):
    """img_size: int or (H, W), a multiple of 32, the only input size accepted. num_blocks/channels: 003's
    L and D for s0..s4. drop_rate: dropout after the attention projection (003's Transformer ``dropout``).
    drop_path_rate: stochastic depth of the s1..s4 residual branches, growing linearly to this value."""

    head_names = ("fc",)

    def __init__(self, img_size=224, in_chans=3, num_blocks=(2, 2, 3, 5, 2), channels=(64, 96, 192, 384, 768),
                 num_classes=1000, block_types=("C", "C", "T", "T"), heads=8, dim_head=32, drop_rate=0.0,
                 drop_path_rate=0.0):
        super().__init__()
        ih, iw = to_2tuple(img_size)
        if len(channels) != 5 or len(num_blocks) != 5 or len(block_types) != 4:
            raise ValueError("CoAtNet needs 5 channels, 5 num_blocks and 4 block_types")
        if ih % 32 or iw % 32:
            raise ValueError(f"CoAtNet img_size must be a multiple of 32 (5 halvings), got {(ih, iw)} "
                             "(-o Arch.img_size=... on the command line)")
        self.img_size, self.in_chans = (ih, iw), in_chans
        self.num_classes = num_classes
        self.num_features = channels[-1]
        # stochastic depth grows linearly over the s1..s4 blocks
        dpr = drop_path_rates(drop_path_rate, num_blocks[1:])
        self.s0 = self._make_layer(conv_3x3_bn, in_chans, channels[0], num_blocks[0], (ih // 2, iw // 2),
                                   [0.0] * num_blocks[0])
        blocks = []
        for i, kind in enumerate(block_types):
            depth, size = num_blocks[i + 1], (ih // 2 ** (i + 2), iw // 2 ** (i + 2))
            extra = dict(heads=heads, dim_head=dim_head, dropout=drop_rate) if kind == "T" else {}
            blocks.append(self._make_layer(_BLOCKS[kind], channels[i], channels[i + 1], depth, size,
                                           dpr[i], **extra))
        self.s1, self.s2, self.s3, self.s4 = blocks
        self.pool = nn.AdaptiveAvgPool2D(1)  # 003's AvgPool2d(ih // 32, 1) on the square ih/32 map
        self.fc = Linear(channels[-1], num_classes, bias_attr=False) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _make_layer(block, in_c, out_c, depth, image_size, dpr, **kwargs):
        layers = []
        for i in range(depth):
            c = in_c if i == 0 else out_c
            layers.append(block(c, out_c, image_size, downsample=(i == 0), drop_path=dpr[i], **kwargs))
        return nn.Sequential(*layers)

    @staticmethod
    def _init_weights(m):
        # 003's init: Kaiming-normal (fan_out, ReLU gain) convs, norms to identity; Linear keeps PyTorch's
        # default U(+-1/sqrt(fan_in)) (Paddle's default would be Xavier)
        if isinstance(m, nn.Conv2D):
            fan_out = m.weight.shape[0] * int(np.prod(m.weight.shape[2:]))
            nn.initializer.Normal(0.0, math.sqrt(2.0 / fan_out))(m.weight)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / math.sqrt(m.weight.shape[0])
            nn.initializer.Uniform(-bound, bound)(m.weight)
            if m.bias is not None:
                nn.initializer.Uniform(-bound, bound)(m.bias)

    def no_weight_decay(self):
        return {name for name, _ in self.named_parameters() if name.endswith("relative_bias_table")}

    def get_classifier(self):
        return self.fc

    def reset_classifier(self, num_classes):
        self.num_classes = num_classes
        self.fc = Linear(self.num_features, num_classes, bias_attr=False) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            self._init_weights(self.fc)

    def forward_features(self, x):
        check_input_size(x, self.img_size, "CoAtNet")  # the relative position tables are sized for it
        x = self.s4(self.s3(self.s2(self.s1(self.s0(x)))))
        return self.pool(x).flatten(1)  # B, C

    def forward_head(self, x, pre_logits=False):
        return x if pre_logits else self.fc(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    @property
    def feature_info(self):
        """timm's feature levels: the outputs of s0 (stride 2) .. s4 (stride 32)."""
        stages = [self.s0, self.s1, self.s2, self.s3, self.s4]
        # each stage ends in a norm (BatchNorm or LayerNorm) over its output channels
        channels = [int([p for p in s.parameters() if p.ndim == 1][-1].shape[0]) for s in stages]
        return [dict(num_chs=c, reduction=2 ** (i + 1), module=f"s{i}") for i, c in enumerate(channels)]

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """timm's ``forward_intermediates`` (``ppvit.models.features``): the maps of ``feature_info``'s levels
        (s0 .. s4) in ``indices`` (None: all; an int n: the last n), each [B, C_i, H / r_i, W / r_i] (NCHW).
        ``norm`` has no effect (no final norm). Returns the list (``intermediates_only``), else
        ``(forward_features(x), list)``; with ``stop_early`` nothing after the last level taken runs (the first
        item is then that map). Raises ``ValueError`` for an input size other than ``img_size``."""
        take, last = feature_take_indices(5, indices)
        check_input_size(x, self.img_size, "CoAtNet")
        intermediates = []
        for i, stage in enumerate([self.s0, self.s1, self.s2, self.s3, self.s4]):
            if stop_early and i > last:
                break
            x = stage(x)
            if i in take:
                intermediates.append(format_map(x, output_fmt))
        if intermediates_only:
            return intermediates
        if not stop_early or last == 4:
            x = self.pool(x).flatten(1)  # B, C: forward_features
        return x, intermediates


# PyTorch (003) -> Paddle keys. Same module tree, so a rename: BatchNorm statistics get Paddle's names, the
# BN step counter and the derived relative_index buffer are dropped, and the Linear weights (SE, qkv,
# attention projection, FFN, classifier) are transposed.
TORCH_KEY_MAP = {
    "drop": [r"\.num_batches_tracked$", r"\.relative_index$"],
    "rename": [
        (r"^module\.", ""),  # saved from DataParallel/DistributedDataParallel
        (r"\.running_mean$", "._mean"),
        (r"\.running_var$", "._variance"),
    ],
    "transpose": [r"\.se\.fc\.[02]\.weight$", r"\.attn\.qkv\.weight$", r"\.attn\.proj\.0\.weight$",
                  r"\.ffn\.ffn\.[03]\.weight$", r"^fc\.weight$"],
}


def checkpoint_filter_fn(state_dict):
    """PyTorch 003 CoAtNet ``state_dict`` ({name: array-like}) -> {Paddle name: np.ndarray}."""
    return apply_key_map(state_dict, TORCH_KEY_MAP)


def pretrained_filter_fn(state_dict, model):
    """Paddle CoAtNet weights fitted to ``model``'s feature-map sizes: each attention's flat
    ``relative_bias_table`` [(2H-1)*(2W-1), heads] of another window is resized (timm's
    ``resize_rel_pos_bias_table``; the table rows are timm's layout, ``relative_position_index``)."""
    out = dict(state_dict)
    for name, layer in model.named_sublayers():
        key = f"{name}.relative_bias_table"
        table = out.get(key)
        if not isinstance(layer, Attention) or table is None:
            continue
        own = tuple(layer.relative_bias_table.shape)
        if tuple(table.shape) != own and len(table.shape) == 2 and table.shape[1] == own[1]:
            try:
                out[key] = resize_rel_pos_bias_table(table, (layer.ih, layer.iw), own)
            except ValueError:  # a window the row count does not tell: refused by the key check
                pass
    return out


# --------------------------------------------------------------------------------------------------------
# variants: constructor arguments per name (003's num_blocks L and channels D), metadata per name, one
# short registered function each
# --------------------------------------------------------------------------------------------------------
_VARIANTS = {
    "coatnet_0": dict(num_blocks=(2, 2, 3, 5, 2), channels=(64, 96, 192, 384, 768)),
    "coatnet_1": dict(num_blocks=(2, 2, 6, 14, 2), channels=(64, 96, 192, 384, 768)),
    "coatnet_2": dict(num_blocks=(2, 2, 6, 14, 2), channels=(128, 128, 256, 512, 1026)),  # 1026 as in 003
    "coatnet_3": dict(num_blocks=(2, 2, 6, 14, 2), channels=(192, 192, 384, 768, 1536)),
    "coatnet_4": dict(num_blocks=(2, 2, 12, 28, 2), channels=(192, 192, 384, 768, 1536)),
}

# 003's code has no training recipe; ImageNet's usual evaluation (bicubic, crop 0.875, ImageNet mean/std)
_CFG = ModelCfg(
    input_size=(3, 224, 224), fixed_input_size=True, interpolation="bicubic", crop_pct=0.875, num_classes=1000,
    classifier="fc", first_conv="s0.0.0", source="source 003 (the blog's PyTorch code, KKKSQJ/DeepLearning)",
    paper="https://arxiv.org/abs/2106.04803", checkpoint_filter_fn=checkpoint_filter_fn,
    pretrained_filter_fn=pretrained_filter_fn)


def _create(name, **kwargs):
    return CoAtNet(**{**_VARIANTS[name], **kwargs})


@register_model(cfg=_CFG)
def coatnet_0(**kwargs):
    """CoAtNet-0 as 003 builds it: 17.79M params, 224x224 input (fixed; img_size a multiple of 32)."""
    return _create("coatnet_0", **kwargs)


@register_model(cfg=_CFG)
def coatnet_1(**kwargs):
    """CoAtNet-1 as 003 builds it: 33.17M params, 224x224 input (fixed; img_size a multiple of 32)."""
    return _create("coatnet_1", **kwargs)


@register_model(cfg=_CFG)
def coatnet_2(**kwargs):
    """CoAtNet-2 as 003 builds it (last width 1026): 55.76M params, 224x224 input (fixed)."""
    return _create("coatnet_2", **kwargs)


@register_model(cfg=_CFG)
def coatnet_3(**kwargs):
    """CoAtNet-3 as 003 builds it: 117.72M params, 224x224 input (fixed; img_size a multiple of 32)."""
    return _create("coatnet_3", **kwargs)


@register_model(cfg=_CFG)
def coatnet_4(**kwargs):
    """CoAtNet-4 as 003 builds it: 203.95M params, 224x224 input (fixed; img_size a multiple of 32)."""
    return _create("coatnet_4", **kwargs)
