"""DilateFormer (notebook 004; Jiao et al., "DilateFormer: Multi-Scale Dilated Transformer for Visual
Recognition", TMM 2023): multi-scale dilated attention in the shallow stages, global attention in the deep
ones, a conv stem and strided-conv patch merging.

Parameter names and shapes are those of the notebook's ``Dilateformer``, so its ``best_model.pdparams``
loads unchanged. The dilated attention is the notebook's math computed from shifted views of padded K/V
instead of ``nn.Unfold`` copies, and without the in-place write that breaks backward on Paddle 3.
"""
from functools import partial

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..kernels import dilated_attention, leading_slice
from .features import feature_take_indices, format_map
from .helpers import apply_key_map
from .layers import (Attention, BatchNorm2D, Conv2D, DepthwiseConv2D, DropPath, GELU, LayerNorm, Linear, Mlp,
                     check_input_size, drop_path_rates, init_vit_weights, permute, to_2tuple)
from .registry import ModelCfg, register_model

__all__ = ["DilateFormer", "dilate_attention"]


def pad_hw(t, top, bottom, left, right):
    """Zero-pad the two leading (H, W) axes of an [H, W, ...] tensor (``F.pad`` with a pad per axis: the generic
    ``pad`` op; several times faster than pad3d here, forward and backward)."""
    return F.pad(t, [top, bottom, left, right] + [0, 0] * (t.ndim - 2))


def dilate_attention(q, k, v, head_dim, dilation=1, kernel_size=3, scale=None, attn_drop=None, pad=None):
    """Sliding-window dilated attention on spatial-major tensors.

    q, k, v: [H, W, B, d] with d = heads * head_dim. Each query attends to the ``kernel_size**2`` keys at
    offsets ``dilation * (-(k-1)/2 .. (k-1)/2)`` around it; positions outside the map are zeros (score 0,
    value 0), exactly as ``nn.Unfold(padding=dilation*(k-1)//2)`` in the notebook. Returns [H, W, B, d].

    Instead of unfolding K and V (k*k copies), K and V are zero-padded once and flattened over (rows, cols):
    a shift by (i, j) is then a plain offset ``i*Wp + j`` along the flattened axis, i.e. a contiguous view
    (2-D window slices are strided, and Paddle copies those slowly). Queries sit on the same padded-width
    grid; the ``2p`` extra columns per row read wrapped-around neighbours and are dropped at the end.
    ``pad``: how the (H, W) axes are zero-padded (``pad_hw``, the default, or a function of its signature).
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    H, W, _, d = q.shape  # batch stays -1 in reshapes so that a dynamic batch exports
    scale = scale or head_dim ** -0.5
    out = dilated_attention(q, k, v, head_dim, dilation, kernel_size, scale, attn_drop, pad)  # where it applies
    if out is not None:
        return out
    pad = pad_hw if pad is None else pad
    p = dilation * (kernel_size - 1) // 2
    Wp = W + 2 * p
    L = H * Wp
    # pad rows by p above and p+1 below (the extra row keeps the last shifted window in range), cols by p.
    # Rows are then (position, batch * head): 3-D operands whose only broadcast (weights times values) is
    # along the last axis; oneDNN's binary kernels are very slow for a broadcast over an inner axis
    k = pad(k, p, p + 1, p, p).reshape([(H + 2 * p + 1) * Wp, -1, head_dim])
    v = pad(v, p, p + 1, p, p).reshape([(H + 2 * p + 1) * Wp, -1, head_dim])
    q = pad(q, 0, 0, 0, 2 * p).reshape([L, -1, head_dim])  # on the H x Wp grid
    offsets = [i * dilation * Wp + j * dilation for i in range(kernel_size) for j in range(kernel_size)]
    scores = [(q * leading_slice(k, o, L)).sum(-1) for o in offsets]  # k*k x (L, B*heads)
    attn = F.softmax(paddle.stack(scores, axis=-1) * scale, axis=-1)  # L, B*heads, k*k
    if attn_drop is not None:
        attn = attn_drop(attn)
    out = None
    for a, o in zip(paddle.unbind(attn.unsqueeze(-2), axis=-1), offsets):
        term = a * leading_slice(v, o, L)  # (L, B*heads, 1) * (L, B*heads, head_dim)
        out = term if out is None else out + term
    out = out.reshape([H, Wp, -1, d])
    # drop the wrapped columns (split, not a slice: its backward is cheap)
    return paddle.split(out, [W, Wp - W], axis=1)[0] if Wp > W else out  # H, W, B, d


class DilateAttention(nn.Layer):
    """One dilation rate of the multi-scale attention (no parameters; kept for the notebook's structure)."""

    def __init__(self, head_dim, qk_scale=None, attn_drop=0.0, kernel_size=3, dilation=1):
        super().__init__()
        self.head_dim = head_dim
        self.scale = qk_scale or head_dim ** -0.5
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.attn_drop = nn.Dropout(attn_drop)

    def forward(self, q, k, v):
        # q, k, v: H, W, B, d (spatial-major, unlike the notebook's B, d, H, W)
        return dilate_attention(q, k, v, self.head_dim, self.dilation, self.kernel_size, self.scale,
                                self.attn_drop)


class MultiDilatelocalAttention(nn.Layer):
    """Multi-scale dilated attention: heads split into groups, one dilation rate per group."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0,
                 kernel_size=3, dilation=(1, 2, 3)):
        super().__init__()
        self.dim = dim
        self.num_heads = num_heads
        head_dim = dim // num_heads
        self.dilation = list(dilation)
        self.kernel_size = kernel_size
        self.scale = qk_scale or head_dim ** -0.5
        self.num_dilation = len(self.dilation)
        if num_heads % self.num_dilation:
            raise ValueError(f"num_heads {num_heads} must be a multiple of the number of dilations "
                             f"{self.num_dilation}")
        # a 1x1 conv as in the notebook (its checkpoint key and [3C, C, 1, 1] shape); applied as a linear
        self.qkv = Conv2D(dim, dim * 3, 1, bias_attr=qkv_bias)
        self.dilate_attention = nn.LayerList(
            [DilateAttention(head_dim, qk_scale, attn_drop, kernel_size, r) for r in self.dilation])
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        _, H, W, C = x.shape
        # spatial-major so that every shifted neighbourhood is a contiguous view (see dilate_attention)
        x = permute(x, [1, 2, 0, 3]).reshape([H * W, -1, C])  # HW, B, C
        # the 1x1 conv is a linear over channels: no NCHW round trip. A matmul against the [3C, C] weight
        # (transpose_y), not F.linear with weight.t(): Paddle 3.3's oneDNN rejects the latter on a 4-D input.
        # 3-D operands here and in proj: Paddle Inference runs a 4-D fc on its plain (slow) kernel
        qkv = paddle.matmul(x, self.qkv.weight.reshape([3 * C, C]), transpose_y=True)
        if self.qkv.bias is not None:
            qkv = qkv + self.qkv.bias  # HW, B, 3C laid out as (3, num_dilation, C/num_dilation)
        n = self.num_dilation
        # q_0..q_n-1, k_0.., v_0..: views (unbind, whose backward is one stack; slices' backward is slow)
        parts = paddle.unbind(qkv.reshape([H, W, -1, 3 * n, C // n]), axis=3)  # each H, W, B, C/n
        outs = [attn(parts[g], parts[n + g], parts[2 * n + g])
                for g, attn in enumerate(self.dilate_attention)]  # each H, W, B, C/n
        # group-major channels, as the notebook's output; concat, never a write into the input
        x = self.proj_drop(self.proj(paddle.concat(outs, axis=-1).reshape([H * W, -1, C])))  # HW, B, C
        return permute(x, [1, 0, 2]).reshape([-1, H, W, C])  # B, H, W, C


class GlobalAttention(Attention):
    """Multi-head self-attention over all positions of a [B, H, W, C] map (the last two stages)."""

    def forward(self, x):
        B, H, W, C = x.shape
        return super().forward(x.reshape([-1, H * W, C])).reshape([-1, H, W, C])


class Block(nn.Layer):
    """Conditional position encoding (3x3 depthwise conv), then pre-norm attention and MLP residuals on a
    [B, C, H, W] map; ``attn`` is the stage's attention (multi-scale dilated or global)."""

    def __init__(self, dim, attn, mlp_ratio=4.0, drop=0.0, drop_path=0.0, act_layer=GELU,
                 norm_layer=LayerNorm):
        super().__init__()
        self.pos_embed = DepthwiseConv2D(dim, dim, 3, padding=1, groups=dim)
        self.norm1 = norm_layer(dim)
        self.attn = attn
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x):
        x = x + self.pos_embed(x)
        _, C, H, W = x.shape
        # tokens [B, HW, C] rather than a [B, H, W, C] map around the MLP: Paddle Inference runs a 4-D fc
        # on its plain CPU kernel instead of oneDNN's (several times slower)
        x = permute(x.flatten(2), [0, 2, 1])  # B, HW, C
        x = x + self.drop_path(self.attn(self.norm1(x).reshape([-1, H, W, C])).reshape([-1, H * W, C]))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return permute(x, [0, 2, 1]).reshape([-1, C, H, W])  # B, C, H, W


class PatchEmbed(nn.Layer):
    """Conv stem: four 3x3 convs (strides 1, 2, 1, 2), BN + GELU between, to stride 4."""

    def __init__(self, img_size=224, in_chans=3, hidden_dim=16, patch_size=4, embed_dim=96):
        super().__init__()
        self.img_size = None if img_size is None else to_2tuple(img_size)
        self.patch_size = (patch_size, patch_size)  # the stem is fixed at stride 4; kept for the signature
        self.proj = nn.Sequential(
            nn.Conv2D(in_chans, hidden_dim, 3, stride=1, padding=1, bias_attr=False),
            BatchNorm2D(hidden_dim),
            GELU(),
            nn.Conv2D(hidden_dim, hidden_dim * 2, 3, stride=2, padding=1, bias_attr=False),
            BatchNorm2D(hidden_dim * 2),
            GELU(),
            nn.Conv2D(hidden_dim * 2, hidden_dim * 4, 3, stride=1, padding=1, bias_attr=False),
            BatchNorm2D(hidden_dim * 4),
            GELU(),
            nn.Conv2D(hidden_dim * 4, embed_dim, 3, stride=2, padding=1, bias_attr=False),
        )

    def forward(self, x):
        if self.img_size is not None:  # the notebook's assert; img_size=None accepts any size
            check_input_size(x, self.img_size, "DilateFormer")
        return self.proj(x)  # B, C, H/4, W/4


class PatchMerging(nn.Layer):
    def __init__(self, in_channels, out_channels, norm_layer=nn.BatchNorm2D):
        super().__init__()
        self.proj = nn.Sequential(
            Conv2D(in_channels, out_channels, 3, stride=2, padding=1),
            norm_layer(out_channels),
        )

    def forward(self, x):
        return self.proj(x)  # B, 2C, H/2, W/2


class Stage(nn.Layer):
    """``depth`` blocks, then patch merging. ``dilation`` given: multi-scale dilated attention (the
    notebook's ``Dilatestage`` of ``DilateBlock``s); ``None``: global attention (its ``Globalstage``)."""

    def __init__(self, dim, depth, num_heads, mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop=0.0,
                 attn_drop=0.0, drop_path=0.0, act_layer=GELU, norm_layer=LayerNorm, downsample=True,
                 kernel_size=3, dilation=None):
        super().__init__()
        dpr = drop_path if isinstance(drop_path, (list, tuple)) else [drop_path] * depth

        def attention():
            if dilation is None:
                return GlobalAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                       attn_drop=attn_drop)
            return MultiDilatelocalAttention(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                                             attn_drop=attn_drop, kernel_size=kernel_size, dilation=dilation)

        self.blocks = nn.LayerList([
            Block(dim, attention(), mlp_ratio, drop, dpr[i], act_layer, norm_layer) for i in range(depth)])
        self.downsample = PatchMerging(dim, dim * 2) if downsample else nn.Identity()

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x)


class DilateFormer(nn.Layer):
    """The notebook's ``Dilateformer`` (keys and shapes identical). Its ``drop``, ``attn_drop`` and
    ``drop_path`` arguments are ``drop_rate``, ``attn_drop_rate`` and ``drop_path_rate`` here.

    img_size: the input size the notebook's stem asserts; ``None`` accepts any size (of at least 32x32).
    """

    def __init__(self, img_size=224, patch_size=4, in_chans=3, num_classes=1000, embed_dim=96,
                 depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), kernel_size=3, dilation=(1, 2, 3),
                 mlp_ratio=4.0, qkv_bias=True, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
                 drop_path_rate=0.1, norm_layer=None, dilate_attention=(True, True, False, False),
                 downsamples=(True, True, True, False)):
        super().__init__()
        self.num_classes = num_classes
        self.num_layers = len(depths)
        self.embed_dim = embed_dim
        self.num_features = int(embed_dim * 2 ** (self.num_layers - 1))
        self.img_size = None if img_size is None else to_2tuple(img_size)
        self.in_chans = in_chans
        norm_layer = norm_layer or partial(LayerNorm, epsilon=1e-6)

        self.patch_embed = PatchEmbed(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                      embed_dim=embed_dim)
        # stochastic depth rising linearly over all blocks, as the notebook's paddle.linspace
        dpr = drop_path_rates(drop_path_rate, depths)
        self.stages = nn.LayerList()
        for i in range(self.num_layers):
            common = dict(dim=int(embed_dim * 2 ** i), depth=depths[i], num_heads=num_heads[i],
                          mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale, drop=drop_rate,
                          attn_drop=attn_drop_rate, drop_path=dpr[i],
                          norm_layer=norm_layer, downsample=downsamples[i])
            self.stages.append(Stage(kernel_size=kernel_size, dilation=dilation if dilate_attention[i] else None,
                                     **common))
        self.norm = norm_layer(self.num_features)
        self.head = Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(partial(init_vit_weights, conv=True))

    def no_weight_decay(self):
        return set()

    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes):
        self.num_classes = num_classes
        self.head = Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            init_vit_weights(self.head)

    def forward_features(self, x):
        x = self.patch_embed(x)
        for stage in self.stages:
            x = stage(x)
        x = self.norm(permute(x.flatten(2), [0, 2, 1]))  # B, L, C
        return x.mean(axis=1)  # B, C (the notebook's AdaptiveAvgPool1D over tokens)

    def forward_head(self, x, pre_logits=False):
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    @property
    def feature_info(self):
        """timm's feature levels: each stage's map before its patch merging ({num_chs, reduction, module})."""
        info, reduction = [], 4  # the stem's stride
        for i, stage in enumerate(self.stages):
            info.append(dict(num_chs=int(stage.blocks[0].pos_embed.weight.shape[0]), reduction=reduction,
                             module=f"stages.{i}.blocks.{len(stage.blocks) - 1}"))
            reduction *= 1 if isinstance(stage.downsample, nn.Identity) else 2
        return info

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """timm's ``forward_intermediates`` (``ppvit.models.features``): the maps of ``feature_info``'s levels
        in ``indices`` (None: all; an int n: the last n), each [B, C_i, H / r_i, W / r_i] (NCHW). norm: the final
        ``norm`` (over channels) on the last stage's map. Returns the list (``intermediates_only``), else
        ``(forward_features(x), list)``; with ``stop_early`` nothing after the last level taken runs (the first
        item is then that stage's merged map)."""
        take, last = feature_take_indices(len(self.stages), indices)
        x = self.patch_embed(x)
        intermediates = []
        for i, stage in enumerate(self.stages):
            if stop_early and i > last:
                break
            for blk in stage.blocks:
                x = blk(x)
            if i in take:
                y = x
                if norm and i == len(self.stages) - 1:
                    C, H, W = y.shape[1:]
                    y = self.norm(y.flatten(2).transpose([0, 2, 1])).transpose([0, 2, 1]).reshape([-1, C, H, W])
                intermediates.append(format_map(y, output_fmt))
            x = stage.downsample(x)
        if intermediates_only:
            return intermediates
        if not stop_early or last == len(self.stages) - 1:
            x = self.norm(x.flatten(2).transpose([0, 2, 1])).mean(axis=1)  # B, C: forward_features
        return x, intermediates


# PyTorch (JIAOJIAYUASD/dilateformer, default options) -> Paddle keys. The notebook kept the official
# module tree and names, so this is a rename: BatchNorm statistics get Paddle's names, the BN step counter
# is dropped, and the Linear weights are transposed (the dilated attention's ``qkv`` is a 1x1 conv, 4-D,
# and stays as it is; the global attention's ``qkv`` is a Linear).
TORCH_KEY_MAP = {
    "drop": [r"\.num_batches_tracked$"],
    "rename": [
        (r"^module\.", ""),  # saved from DistributedDataParallel
        (r"\.running_mean$", "._mean"),
        (r"\.running_var$", "._variance"),
    ],
    "transpose": [r"\.attn\.(qkv|proj)\.weight$", r"\.mlp\.fc[12]\.weight$", r"^head\.weight$"],
}


def checkpoint_filter_fn(state_dict):
    """Official PyTorch DilateFormer ``state_dict`` ({name: array-like}) -> {Paddle name: np.ndarray}."""
    return apply_key_map(state_dict, TORCH_KEY_MAP)


# --------------------------------------------------------------------------------------------------------
# variants: constructor arguments per name, metadata per name, one short registered function each
# --------------------------------------------------------------------------------------------------------
_VARIANTS = {
    "dilateformer_t": dict(depths=(2, 2, 6, 2), embed_dim=72, num_heads=(3, 6, 12, 24)),
    "dilateformer_s": dict(depths=(3, 5, 8, 3), embed_dim=72, num_heads=(3, 6, 12, 24)),
    "dilateformer_b": dict(depths=(4, 8, 10, 3), embed_dim=96, num_heads=(3, 6, 12, 24)),
}

# the official code trains with DeiT's recipe: bicubic resize, crop 0.875, ImageNet mean/std. The stem
# asserts img_size (the notebook's), hence fixed; img_size=None lifts it.
_CFG = ModelCfg(
    input_size=(3, 224, 224), fixed_input_size=True, interpolation="bicubic", crop_pct=0.875, num_classes=1000,
    classifier="head", first_conv="patch_embed.proj.0",
    source="notebook 004 (keys of https://github.com/JIAOJIAYUASD/dilateformer)",
    paper="https://arxiv.org/abs/2302.01791", checkpoint_filter_fn=checkpoint_filter_fn)


def _create(name, **kwargs):
    return DilateFormer(**{**_VARIANTS[name], **kwargs})


@register_model(cfg=_CFG)
def dilateformer_t(**kwargs):
    """DilateFormer-T: 17.2M params, 224x224 input (fixed; img_size=None for any), notebook 004's model."""
    return _create("dilateformer_t", **kwargs)


@register_model(cfg=_CFG)
def dilateformer_s(**kwargs):
    """DilateFormer-S: 24.1M params, 224x224 input (fixed; img_size=None for any)."""
    return _create("dilateformer_s", **kwargs)


@register_model(cfg=_CFG)
def dilateformer_b(**kwargs):
    """DilateFormer-B: 47.4M params, 224x224 input (fixed; img_size=None for any)."""
    return _create("dilateformer_b", **kwargs)
