"""ConViT: a ViT whose first blocks use gated positional self-attention (GPSA).

"ConViT: Improving Vision Transformers with Soft Convolutional Inductive Biases", d'Ascoli et al., 2021
(https://arxiv.org/abs/2103.10697). Architecture, parameter names and init follow the AI Studio notebook
(source 002), whose keys are also those of facebookresearch/convit and timm, so the notebook's
``*.pdparams`` load unchanged:

    patch_embed.proj, cls_token, pos_embed,
    blocks.i.{norm1, attn.{qk, v, proj, pos_proj, gating_param} | attn.{qkv, proj}, norm2, mlp.fc1, mlp.fc2},
    norm, head

Differences from the notebook, none of which changes the outputs:
- GPSA's positional scores depend only on the (fixed) patch grid and ``pos_proj``, so they are computed once
  per forward as [1, heads, N, N] and broadcast, where the notebook projected ``rel_indices`` expanded to
  every sample; ``rel_indices`` is a non-persistent buffer built once (the notebook's ``state_dict`` does not
  hold it either).
- A wrong input size raises ``ValueError`` (``layers.check_input_size``) instead of an assert.
"""
from functools import partial

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .features import feature_take_indices, format_map
from ..kernels import mix_heads
from .helpers import apply_key_map
from .layers import (Attention, Conv2D, DropPath, GELU, LayerNorm, Linear, Mlp, check_input_size, drop_path_rates,
                     init_vit_weights, permute, to_2tuple, trunc_normal_)
from .pos_embed import resample_abs_pos_embed
from .registry import ModelCfg, register_model

__all__ = ["ConViT", "GPSA", "MHSA", "convit_tiny", "convit_small", "convit_base"]


def relative_indices(grid_size):
    """[1, N, N, 3] float32 of (dx, dy, dx^2 + dy^2) from patch n to patch m, N = gh * gw, row-major
    patches (the notebook's ``get_rel_indices``, which assumed a square grid)."""
    gh, gw = grid_size
    rows, cols = np.divmod(np.arange(gh * gw), gw)
    dx = cols[None, :] - cols[:, None]  # N, N: column offset of m seen from n
    dy = rows[None, :] - rows[:, None]
    rel = np.stack([dx, dy, dx ** 2 + dy ** 2], axis=-1).astype("float32")
    return paddle.to_tensor(rel[None])


class PatchEmbed(nn.Layer):
    """Non-overlapping patch projection; the grid is fixed by ``img_size`` (pos_embed, rel_indices)."""

    def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
        super().__init__()
        self.img_size = to_2tuple(img_size)
        self.patch_size = to_2tuple(patch_size)
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = Conv2D(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)

    def forward(self, x):
        check_input_size(x, self.img_size, "ConViT")  # pos_embed and the GPSA offsets fix the grid
        x = self.proj(x)  # B, C, gh, gw
        return permute(x.flatten(2), [0, 2, 1])  # B, N, C


class GPSA(nn.Layer):
    """Gated positional self-attention: a learned per-head gate mixes content attention (softmax of
    q.k) with positional attention (softmax of a linear map of the relative offsets)."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0,
                 locality_strength=1.0, grid_size=(14, 14)):
        super().__init__()
        self.num_heads = num_heads
        self.dim = dim
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.locality_strength = locality_strength
        self.gating_param = self.create_parameter(
            [num_heads], default_initializer=nn.initializer.Constant(1.0))
        self.qk = Linear(dim, dim * 2, bias_attr=qkv_bias)
        self.v = Linear(dim, dim, bias_attr=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = Linear(dim, dim)
        self.pos_proj = Linear(3, num_heads)
        self.proj_drop = nn.Dropout(proj_drop)
        # built once for the fixed grid; not persistent, as the notebook's state_dict has no rel_indices
        self.register_buffer("rel_indices", relative_indices(grid_size), persistable=False)

    def local_init(self):
        """Start as a convolution: v is the identity, head h attends around its own offset of a
        sqrt(heads) x sqrt(heads) kernel, sharper with larger ``locality_strength``."""
        self.v.weight.set_value(paddle.eye(self.dim, dtype=self.v.weight.dtype))
        kernel_size = int(self.num_heads ** 0.5)
        center = (kernel_size - 1) / 2 if kernel_size % 2 == 0 else kernel_size // 2
        w = self.pos_proj.weight.numpy().copy()  # [3 (dx, dy, d^2), heads]
        for h1 in range(kernel_size):
            for h2 in range(kernel_size):
                head = h1 + kernel_size * h2
                w[2, head] = -1.0
                w[1, head] = 2.0 * (h1 - center)
                w[0, head] = 2.0 * (h2 - center)
        self.pos_proj.weight.set_value(paddle.to_tensor(w * self.locality_strength))

    def get_attention(self, x):
        B, N, C = x.shape
        if N != self.rel_indices.shape[1]:
            raise ValueError(f"GPSA was built for {self.rel_indices.shape[1]} tokens, got {N}")
        qk = self.qk(x).reshape([B, N, 2, self.num_heads, C // self.num_heads])
        # 2, B, heads, N, head_dim -> q, k (unbind: its backward is one stack; two slices' backwards are slow)
        q, k = permute(qk, [2, 0, 3, 1, 4]).unbind(0)
        # scaling q (B.N.C values) rather than the scores (B.heads.N.N) is the same product, cheaper
        patch_score = F.softmax(paddle.matmul(q * self.scale, k, transpose_y=True), axis=-1)  # B, heads, N, N
        # the same for every sample: project the offsets once and broadcast over the batch
        pos_score = permute(self.pos_proj(self.rel_indices), [0, 3, 1, 2])  # 1, heads, N, N
        pos_score = F.softmax(pos_score, axis=-1)
        gate = F.sigmoid(self.gating_param)  # heads
        attn = mix_heads(patch_score, pos_score, gate)  # (1 - gate) * patch_score + gate * pos_score, per head
        # the notebook renormalises here; each row is a convex mix of two distributions and sums to 1
        # already (up to rounding), so that extra pass over B x heads x N x N is left out
        return self.attn_drop(attn)

    def forward(self, x):
        B, N, C = x.shape
        attn = self.get_attention(x)
        v = permute(self.v(x).reshape([B, N, self.num_heads, C // self.num_heads]), [0, 2, 1, 3])
        x = permute(attn @ v, [0, 2, 1, 3]).reshape([B, N, C])  # B, N, C
        return self.proj_drop(self.proj(x))


class MHSA(Attention):
    """Plain multi-head self-attention (the blocks after ``local_up_to_layer``, with the cls token)."""


class Block(nn.Layer):
    def __init__(self, dim, num_heads, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop=0.0, attn_drop=0.0,
                 drop_path=0.0, act_layer=GELU, norm_layer=LayerNorm, use_gpsa=True, **attn_kwargs):
        super().__init__()
        self.use_gpsa = use_gpsa
        self.norm1 = norm_layer(dim)
        attn_cls = GPSA if use_gpsa else MHSA
        self.attn = attn_cls(dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale,
                             attn_drop=attn_drop, proj_drop=drop, **attn_kwargs)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = norm_layer(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=act_layer, drop=drop)

    def forward(self, x):
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class ConViT(nn.Layer):
    """ConViT (the notebook's ``VisionTransformer``).

    ``embed_dim`` is the width per head, as in the notebook and the official code: the model width is
    ``embed_dim * num_heads``. Blocks ``i < local_up_to_layer`` use GPSA on the patch tokens; the cls
    token joins before block ``local_up_to_layer`` and the remaining blocks use MHSA. The input size is
    fixed by ``img_size`` (pos_embed and the GPSA offsets are built for its patch grid).
    """

    def __init__(self, img_size=224, patch_size=16, in_chans=3, num_classes=1000, embed_dim=48, depth=12,
                 num_heads=12, mlp_ratio=4.0, qkv_bias=False, qk_scale=None, drop_rate=0.0, attn_drop_rate=0.0,
                 drop_path_rate=0.0, norm_layer=None, local_up_to_layer=10, locality_strength=1.0,
                 use_pos_embed=True):
        super().__init__()
        norm_layer = norm_layer or partial(LayerNorm, epsilon=1e-6)
        embed_dim *= num_heads
        self.num_classes = num_classes
        self.local_up_to_layer = local_up_to_layer
        self.num_features = self.embed_dim = embed_dim
        self.img_size, self.in_chans = to_2tuple(img_size), in_chans
        self.use_pos_embed = use_pos_embed
        self.drop_path_rate = drop_path_rate

        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.num_patches = self.patch_embed.num_patches
        self.cls_token = self.create_parameter([1, 1, embed_dim])
        trunc_normal_(self.cls_token)
        self.pos_drop = nn.Dropout(p=drop_rate)
        if use_pos_embed:
            # patch tokens only: the cls token is added later, after the GPSA blocks
            self.pos_embed = self.create_parameter([1, self.num_patches, embed_dim])
            trunc_normal_(self.pos_embed)

        dpr = drop_path_rates(drop_path_rate, [depth])[0]  # stochastic depth rises linearly
        common = dict(dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias,
                      qk_scale=qk_scale, drop=drop_rate, attn_drop=attn_drop_rate, norm_layer=norm_layer)
        self.blocks = nn.LayerList([
            Block(drop_path=dpr[i], use_gpsa=True, locality_strength=locality_strength,
                  grid_size=self.patch_embed.grid_size, **common)
            if i < local_up_to_layer else
            Block(drop_path=dpr[i], use_gpsa=False, **common)
            for i in range(depth)])
        self.norm = norm_layer(embed_dim)
        self.head = Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()

        self.apply(init_vit_weights)
        for blk in self.blocks:
            if blk.use_gpsa:
                blk.attn.local_init()

    def no_weight_decay(self):
        return {"pos_embed", "cls_token"}

    def get_classifier(self):
        return self.head

    def reset_classifier(self, num_classes):
        self.num_classes = num_classes
        self.head = Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            init_vit_weights(self.head)

    def _embed(self, x):
        """[B, C, H, W] -> (patch tokens [B, N, C] with the position embedding, cls token [B, 1, C])."""
        B = x.shape[0]
        x = self.patch_embed(x)  # B, N, C
        if self.use_pos_embed:
            x = x + self.pos_embed
        return self.pos_drop(x), self.cls_token.expand([B, -1, -1])

    def forward_features(self, x):
        x, cls_tokens = self._embed(x)
        for i, blk in enumerate(self.blocks):
            if i == self.local_up_to_layer:
                x = paddle.concat([cls_tokens, x], axis=1)  # B, 1 + N, C
            x = blk(x)
        x = self.norm(x)
        # as in the notebook: the cls token (or the first patch if no MHSA block follows)
        return x[:, 0]

    def forward_head(self, x, pre_logits=False):
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    @property
    def feature_info(self):
        """timm's feature levels: every block's patch tokens as a map on the patch grid."""
        return [dict(num_chs=self.embed_dim, reduction=self.patch_embed.patch_size[0], module=f"blocks.{i}")
                for i in range(len(self.blocks))]

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """timm's ``forward_intermediates`` (``ppvit.models.features``): the outputs of the blocks in
        ``indices`` (None: all; an int n: the last n), patch tokens only (the cls token left out), reshaped to
        the patch grid: [B, embed_dim, H / patch, W / patch] (NCHW). norm: the final ``norm`` on each. Returns
        the list (``intermediates_only``), else ``(forward_features(x), list)``; with ``stop_early`` no block
        after the last one taken runs (the first item is then the final norm's first token at that block: the cls
        token once it has joined, as ``forward_features``)."""
        take, last = feature_take_indices(len(self.blocks), indices)
        gh, gw = self.patch_embed.grid_size
        x, cls_tokens = self._embed(x)
        intermediates = []
        for i, blk in enumerate(self.blocks):
            if stop_early and i > last:
                break
            if i == self.local_up_to_layer:
                x = paddle.concat([cls_tokens, x], axis=1)  # B, 1 + N, C
            x = blk(x)
            if i in take:
                y = self.norm(x) if norm else x
                y = y[:, 1:] if i >= self.local_up_to_layer else y  # B, N, C: patch tokens
                intermediates.append(format_map(y.transpose([0, 2, 1]).reshape([-1, self.embed_dim, gh, gw]),
                                                output_fmt))  # B, C, gh, gw
        if intermediates_only:
            return intermediates
        return self.norm(x)[:, 0], intermediates  # forward_features


# PyTorch -> Paddle keys. facebookresearch/convit and timm's ``convit.py`` share this module tree and
# these names, so their checkpoints convert by the same rename: Linear weights are transposed (PyTorch
# stores [out, in], Paddle [in, out]). Both keep ``rel_indices`` as a plain attribute, out of the
# state_dict; a checkpoint that does carry it has it dropped (ppvit builds it from the patch grid).
TORCH_KEY_MAP = {
    "drop": [r"\.rel_indices$"],
    "rename": [(r"^module\.", "")],  # saved from DistributedDataParallel
    "transpose": [r"\.attn\.(qk|v|qkv|proj|pos_proj)\.weight$", r"\.mlp\.fc[12]\.weight$", r"^head\.weight$"],
}


def checkpoint_filter_fn(state_dict):
    """Official/timm PyTorch ConViT ``state_dict`` ({name: array-like}) -> {Paddle name: np.ndarray}."""
    return apply_key_map(state_dict, TORCH_KEY_MAP)


def pretrained_filter_fn(state_dict, model):
    """Paddle ConViT weights fitted to ``model``'s patch grid: a square ``pos_embed`` of another grid is
    resampled (timm's ``resample_abs_pos_embed``: bicubic, antialiased; no prefix token)."""
    posemb = state_dict.get("pos_embed")
    own = getattr(model, "pos_embed", None)
    if posemb is None or own is None or tuple(posemb.shape) == tuple(own.shape) or posemb.shape[-1] != own.shape[-1]:
        return state_dict  # nothing to fit; any other difference stays for the strict check
    try:
        resampled = resample_abs_pos_embed(posemb, model.patch_embed.grid_size, num_prefix_tokens=0)
    except ValueError:  # not a square grid: left as it is, and refused by the key check
        return state_dict
    return {**state_dict, "pos_embed": resampled}


# --------------------------------------------------------------------------------------------------------
# variants: constructor arguments per name, metadata per name, one short registered function each
# --------------------------------------------------------------------------------------------------------
_VARIANTS = {
    "convit_tiny": dict(num_heads=4),
    "convit_small": dict(num_heads=9),
    "convit_base": dict(num_heads=16),
}

# facebookresearch/convit trains with DeiT's recipe: bicubic resize, crop 0.875, ImageNet mean/std
_CFG = ModelCfg(
    input_size=(3, 224, 224), fixed_input_size=True, interpolation="bicubic", crop_pct=0.875, num_classes=1000,
    classifier="head", first_conv="patch_embed.proj",
    source="notebook 002 (keys of https://github.com/facebookresearch/convit)",
    paper="https://arxiv.org/abs/2103.10697", checkpoint_filter_fn=checkpoint_filter_fn,
    pretrained_filter_fn=pretrained_filter_fn)


def _create(name, **kwargs):
    return ConViT(**{**_VARIANTS[name], **kwargs})


@register_model(cfg=_CFG)
def convit_tiny(**kwargs):
    """ConViT-Ti: 4 heads x 48 = 192 wide, 12 blocks (10 GPSA), 5.71M params, 224x224 input (fixed)."""
    return _create("convit_tiny", **kwargs)


@register_model(cfg=_CFG)
def convit_small(**kwargs):
    """ConViT-S: 9 heads x 48 = 432 wide, 12 blocks (10 GPSA), 27.78M params, 224x224 input (fixed)."""
    return _create("convit_small", **kwargs)


@register_model(cfg=_CFG)
def convit_base(**kwargs):
    """ConViT-B: 16 heads x 48 = 768 wide, 12 blocks (10 GPSA), 86.54M params, 224x224 input (fixed)."""
    return _create("convit_base", **kwargs)
