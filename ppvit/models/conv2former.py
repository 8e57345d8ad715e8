"""Conv2Former: "A Simple Transformer-Style ConvNet for Visual Recognition" (Hou et al., TPAMI 2024).

Two models share the convolutional-modulation block here:
- ``Conv2FormerCifar`` (``conv2former_n_cifar``): the AI Studio notebook's 32x32 model (source 000): a 1x1
  conv stem, no layer scale, GroupNorm + 2x2 conv downsampling after each stage, a final LayerNorm and a
  linear head. Its ``state_dict`` keys and shapes are the notebook's, so a notebook ``best_model.pdparams``
  loads unchanged.
- ``Conv2Former`` (``conv2former_n/t/s/b/l``): the official architecture (source 001 and
  github.com/HVision-NKU/Conv2Former): a conv/BN stem to 1/4 resolution, LayerNorm + 2x2 conv downsampling,
  layer scale 1e-6, a large depthwise kernel (7x7 in Conv2Former-N, 11x11 in T/S/B/L, as the official
  configurations) and a 1280-wide conv head before the classifier ``pred``.
  The module tree mirrors the PyTorch code, so official weights convert by the plain rename in
  ``TORCH_KEY_MAP`` (see ``checkpoint_filter_fn``).
"""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from ..kernels import scale_channels
from .features import feature_take_indices, format_map
from .helpers import apply_key_map
from .layers import (BatchNorm2D, Conv2D, DepthwiseConv2D, DropPath, GELU, LayerNorm, LayerNorm2d, Linear,
                     drop_path_rates, init_vit_weights, to_2tuple, trunc_normal_, zeros_)
from .registry import ModelCfg, register_model

__all__ = ["Conv2Former", "Conv2FormerCifar", "TORCH_KEY_MAP", "checkpoint_filter_fn"]


class MLP(nn.Layer):
    """Conv MLP: norm -> 1x1 expand -> GELU -> (+ GELU(3x3 depthwise)) -> 1x1 project.

    The notebook's MLP also took a ``drop`` argument that it never used; it is left out so outputs match.
    """

    def __init__(self, dim, mlp_ratio=4):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.fc1 = Conv2D(dim, hidden, 1)
        self.pos = DepthwiseConv2D(hidden, hidden, 3, padding=1, groups=hidden)
        self.fc2 = Conv2D(hidden, dim, 1)
        self.act = GELU()

    def forward(self, x):
        x = self.act(self.fc1(self.norm(x)))
        x = x + self.act(self.pos(x))
        return self.fc2(x)


class SpatialAttention(nn.Layer):
    """Convolutional modulation: proj(A * V) with A = dwconv_kxk(GELU(1x1(x))) and V = 1x1(x)."""

    # the official code names the modulator ``att``; the notebook names it ``a`` (see ConvMod)
    modulator_name = "att"

    def __init__(self, dim, kernel_size=11):
        super().__init__()
        self.norm = LayerNorm2d(dim, eps=1e-6)
        setattr(self, self.modulator_name, nn.Sequential(
            Conv2D(dim, dim, 1),
            GELU(),
            DepthwiseConv2D(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim),
        ))
        self.v = Conv2D(dim, dim, 1)
        self.proj = Conv2D(dim, dim, 1)

    def forward(self, x):
        modulator = getattr(self, self.modulator_name)
        x = self.norm(x)
        x = modulator(x) * self.v(x)
        return self.proj(x)


class ConvMod(SpatialAttention):
    """The notebook's name for the same module; only the checkpoint key of the modulator differs."""

    modulator_name = "a"


class Block(nn.Layer):
    """x + drop_path(gamma1 * attn(x)); x + drop_path(gamma2 * mlp(x)).

    ``layer_scale_init_value=None`` drops the layer scale (the notebook's block); the official block uses 1e-6.
    """

    def __init__(self, dim, kernel_size=11, mlp_ratio=4.0, drop_path=0.0, layer_scale_init_value=1e-6,
                 attn_layer=SpatialAttention):
        super().__init__()
        self.attn = attn_layer(dim, kernel_size)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.mlp = MLP(dim, mlp_ratio)
        if layer_scale_init_value is not None:
            init = nn.initializer.Constant(layer_scale_init_value)
            self.layer_scale_1 = self.create_parameter([dim], default_initializer=init)
            self.layer_scale_2 = self.create_parameter([dim], default_initializer=init)
        else:
            self.layer_scale_1 = self.layer_scale_2 = None

    def _scale(self, gamma, x):
        return x if gamma is None else scale_channels(x, gamma)  # gamma [C] times each channel

    def forward(self, x):
        x = x + self.drop_path(self._scale(self.layer_scale_1, self.attn(x)))
        x = x + self.drop_path(self._scale(self.layer_scale_2, self.mlp(x)))
        return x


# --------------------------------------------------------------------------------------------------------
# the notebook's 32x32 model (source 000)
# --------------------------------------------------------------------------------------------------------
class GroupNormDownsample(nn.Sequential):
    """The notebook's downsampling: ``GroupNorm(1, C)`` then a 2x2 stride-2 conv without bias (keys ``0.weight``,
    ``0.bias``, ``1.weight``, as the notebook's ``nn.Sequential``). [B, C, H, W] -> [B, C_out, H/2, W/2].
    (Exports run it as a LayerNorm with the affine folded into the conv: ``ppvit.deploy.rewrites``.)
    """


class NormConvDownsample(nn.Sequential):
    """The official downsampling: ``LayerNorm2d`` then a 2x2 stride-2 conv (keys ``0.*``, ``1.*``, as the
    official ``nn.Sequential``). [B, C, H, W] -> [B, C_out, H/2, W/2]."""


class BasicLayer(nn.Layer):
    """One stage of the notebook model: blocks, then (except in the last stage) GroupNorm + 2x2 conv."""

    def __init__(self, dim, depth, out_dim=None, kernel_size=11, mlp_ratio=4.0, drop_path=(), downsample=True):
        super().__init__()
        self.blocks = nn.LayerList([
            Block(dim, kernel_size, mlp_ratio, drop_path[i], layer_scale_init_value=None, attn_layer=ConvMod)
            for i in range(depth)])
        if downsample:
            self.downsample = GroupNormDownsample(
                nn.GroupNorm(num_groups=1, num_channels=dim),
                nn.Conv2D(dim, out_dim or dim * 2, kernel_size=2, stride=2, bias_attr=False),
            )
        else:
            self.downsample = None

    def forward(self, x):
        for blk in self.blocks:
            x = blk(x)
        if self.downsample is not None:
            x = self.downsample(x)  # B, 2C, H/2, W/2
        return x


class Conv2FormerCifar(nn.Layer):
    """The notebook's Conv2Former: full-resolution 1x1 stem, for 32x32 inputs (any size of at least 8x8
    works; ``img_size`` is the nominal size only). ``drop_rate``: the notebook's dropout after the stem.

    Keys: ``layers.{i}.blocks.{j}.attn.{norm,a.0,a.2,v,proj}``, ``...mlp.{norm,fc1,pos,fc2}``,
    ``layers.{i}.downsample.{0,1}``, ``fc1`` (stem), ``norm``, ``head``.
    """

    def __init__(self, num_classes=10, depths=(2, 2, 8, 2), dims=(64, 128, 256, 512), mlp_ratio=2,
                 kernel_size=11, in_chans=3, drop_rate=0.0, drop_path_rate=0.1, img_size=32):
        super().__init__()
        self.num_classes = num_classes
        self.num_features = dims[-1]
        self.img_size, self.in_chans = to_2tuple(img_size), in_chans
        self.pos_drop = nn.Dropout(p=drop_rate)
        dpr = drop_path_rates(drop_path_rate, depths)
        last = len(depths) - 1
        self.layers = nn.LayerList([
            BasicLayer(dims[i], depths[i], dims[i + 1] if i < last else None, kernel_size, mlp_ratio, dpr[i],
                       downsample=i < last)
            for i in range(len(depths))])
        # registered after the stages, as in the notebook, so state_dict order matches too
        self.fc1 = Conv2D(in_chans, dims[0], 1)
        self.norm = LayerNorm2d(dims[-1], eps=1e-6)
        self.avgpool = nn.AdaptiveAvgPool2D(1)
        self.head = Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(lambda m: init_vit_weights(m, conv=True))

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
        x = self.pos_drop(self.fc1(x))
        for layer in self.layers:
            x = layer(x)
        x = self.avgpool(self.norm(x))  # B, C, 1, 1
        return x.flatten(1)  # B, C

    def forward_head(self, x, pre_logits=False):
        return x if pre_logits else self.head(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    @property
    def feature_info(self):
        """timm's feature levels: each stage's map before its downsampling ({num_chs, reduction, module})."""
        return [dict(num_chs=int(layer.blocks[0].mlp.fc2.weight.shape[0]), reduction=2 ** i,
                     module=f"layers.{i}.blocks.{len(layer.blocks) - 1}") for i, layer in enumerate(self.layers)]

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """timm's ``forward_intermediates`` (``ppvit.models.features``): the maps of ``feature_info``'s levels
        in ``indices`` (None: all; an int n: the last n), each [B, C_i, H / r_i, W / r_i] (NCHW). norm: the final
        ``norm`` on the last stage's map. Returns the list (``intermediates_only``), else ``(forward_features(x),
        list)``; with ``stop_early`` nothing after the last level taken runs (the first item is then that map)."""
        take, last = feature_take_indices(len(self.layers), indices)
        intermediates = []
        x = self.pos_drop(self.fc1(x))
        for i, layer in enumerate(self.layers):
            if stop_early and i > last:
                break
            for blk in layer.blocks:
                x = blk(x)
            if i in take:
                y = self.norm(x) if norm and i == len(self.layers) - 1 else x
                intermediates.append(format_map(y, output_fmt))
            if layer.downsample is not None:
                x = layer.downsample(x)  # B, 2C, H/2, W/2
        if intermediates_only:
            return intermediates
        if not stop_early or last == len(self.layers) - 1:
            x = self.avgpool(self.norm(x)).flatten(1)  # B, C: forward_features
        return x, intermediates


# --------------------------------------------------------------------------------------------------------
# the official architecture (source 001 + HVision-NKU/Conv2Former models/conv2former.py)
# --------------------------------------------------------------------------------------------------------
class Conv2Former(nn.Layer):
    """Official Conv2Former. Module tree as in PyTorch: ``downsample_layers.{0..3}`` (0 is the stem),
    ``stages.{i}.{j}`` blocks, ``head`` (1x1 conv to ``head_dim`` + GELU + LayerNorm) and ``pred``.

    Any input size of at least 32x32 works (``img_size`` is the nominal size only). ``drop_rate``: dropout
    before ``pred`` (no parameters; 0 in the official configurations)."""

    head_names = ("pred",)

    def __init__(self, dims=(96, 192, 384, 768), depths=(3, 3, 9, 3), kernel_size=11, mlp_ratios=4,
                 num_classes=1000, in_chans=3, head_dim=1280, drop_rate=0.0, drop_path_rate=0.0,
                 layer_scale_init_value=1e-6, img_size=224):
        super().__init__()
        if isinstance(mlp_ratios, (int, float)):
            mlp_ratios = [mlp_ratios] * len(dims)
        self.num_classes = num_classes
        self.num_features = head_dim
        self.img_size, self.in_chans = to_2tuple(img_size), in_chans
        half = dims[0] // 2
        # stem: two 3x3 conv/GELU/BN at 1/2, then a 2x2 stride-2 conv -> 1/4 resolution
        stem = nn.Sequential(
            nn.Conv2D(in_chans, half, 3, stride=2, padding=1, bias_attr=False),
            GELU(),
            BatchNorm2D(half),
            nn.Conv2D(half, half, 3, stride=1, padding=1, bias_attr=False),
            GELU(),
            BatchNorm2D(half),
            nn.Conv2D(half, dims[0], 2, stride=2, bias_attr=False),
        )
        self.downsample_layers = nn.LayerList([stem] + [
            NormConvDownsample(LayerNorm2d(dims[i], eps=1e-6), Conv2D(dims[i], dims[i + 1], 2, stride=2))
            for i in range(len(dims) - 1)])
        dpr = drop_path_rates(drop_path_rate, depths)
        self.stages = nn.LayerList([
            nn.Sequential(*[Block(dims[i], kernel_size, mlp_ratios[i], dpr[i][j], layer_scale_init_value)
                            for j in range(depths[i])])
            for i in range(len(dims))])
        self.head = nn.Sequential(
            Conv2D(dims[-1], head_dim, 1),
            GELU(),
            LayerNorm2d(head_dim, eps=1e-6),
        )
        self.head_drop = nn.Dropout(drop_rate)
        self.pred = Linear(head_dim, num_classes) if num_classes > 0 else nn.Identity()
        # official init: trunc-normal(.02) for every conv and linear, zero biases; BatchNorm keeps defaults
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, (nn.Conv2D, nn.Linear)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                zeros_(m.bias)

    def no_weight_decay(self):
        # the official recipe (timm optimizer factory) exempts 1-d params by shape, not by name
        return set()

    def get_classifier(self):
        return self.pred

    def reset_classifier(self, num_classes):
        self.num_classes = num_classes
        self.pred = Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            self._init_weights(self.pred)

    def forward_features(self, x):
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        x = self.head(x)  # B, head_dim, H/32, W/32
        return x.mean([-2, -1])  # B, head_dim

    def forward_head(self, x, pre_logits=False):
        x = self.head_drop(x)
        return x if pre_logits else self.pred(x)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))

    @property
    def feature_info(self):
        """timm's feature levels: each stage's output ({num_chs, reduction, module})."""
        return [dict(num_chs=int(stage[0].mlp.fc2.weight.shape[0]), reduction=4 * 2 ** i, module=f"stages.{i}")
                for i, stage in enumerate(self.stages)]

    def forward_intermediates(self, x, indices=None, norm=False, stop_early=False, output_fmt="NCHW",
                              intermediates_only=False):
        """timm's ``forward_intermediates`` (``ppvit.models.features``): the maps of ``feature_info``'s levels
        in ``indices`` (None: all; an int n: the last n), each [B, C_i, H / r_i, W / r_i] (NCHW). ``norm`` has
        no effect (the stages end without a norm; the 1x1-conv/GELU/LayerNorm ``head`` is part of the features).
        Returns the list (``intermediates_only``), else ``(forward_features(x), list)``; with ``stop_early``
        nothing after the last level taken runs (the first item is then that map)."""
        take, last = feature_take_indices(len(self.stages), indices)
        intermediates = []
        for i, (downsample, stage) in enumerate(zip(self.downsample_layers, self.stages)):
            if stop_early and i > last:
                break
            x = stage(downsample(x))
            if i in take:
                intermediates.append(format_map(x, output_fmt))
        if intermediates_only:
            return intermediates
        if not stop_early or last == len(self.stages) - 1:
            x = self.head(x).mean([-2, -1])  # B, head_dim: forward_features
        return x, intermediates


# PyTorch (official) -> Paddle keys. The module trees are identical, so this is a rename only:
# BatchNorm running statistics get Paddle's names, the step counter has no Paddle counterpart, and
# Linear weights are stored [out, in] by PyTorch but [in, out] by Paddle.
TORCH_KEY_MAP = {
    "rename": [
        (r"^module\.", ""),  # checkpoints saved from DistributedDataParallel
        (r"\.running_mean$", "._mean"),
        (r"\.running_var$", "._variance"),
    ],
    "drop": [r"\.num_batches_tracked$"],
    "transpose": [r"^pred\.weight$"],  # the only nn.Linear; every other weight is a conv
}


def checkpoint_filter_fn(state_dict):
    """Convert an official PyTorch ``state_dict`` ({name: array-like}) to Paddle keys and layouts."""
    return apply_key_map(state_dict, TORCH_KEY_MAP)


# --------------------------------------------------------------------------------------------------------
# variants: constructor arguments per name, metadata per name, one short registered function each
# --------------------------------------------------------------------------------------------------------
_VARIANTS = {
    # the notebook's model (000): its Conv2Former(num_classes=10, ..., mlp_ratio=2, drop_path_rate=0.1)
    "conv2former_n_cifar": dict(dims=(64, 128, 256, 512), depths=(2, 2, 8, 2), mlp_ratio=2, kernel_size=11),
    # the official configurations (HVision-NKU/Conv2Former models/conv2former.py): mlp_ratio 4, a 7x7
    # kernel for N (14.99M parameters, the paper's 15M / 2.2G) and 11x11 for the others
    "conv2former_n": dict(dims=(64, 128, 256, 512), depths=(2, 2, 8, 2), kernel_size=7),
    "conv2former_t": dict(dims=(72, 144, 288, 576), depths=(3, 3, 12, 3), kernel_size=11),
    "conv2former_s": dict(dims=(72, 144, 288, 576), depths=(4, 4, 32, 4), kernel_size=11),
    "conv2former_b": dict(dims=(96, 192, 384, 768), depths=(4, 4, 34, 4), kernel_size=11),
    "conv2former_l": dict(dims=(128, 256, 512, 1024), depths=(4, 4, 48, 4), kernel_size=11),
}

_PAPER = "https://arxiv.org/abs/2211.11943"
_OFFICIAL_CFG = ModelCfg(
    input_size=(3, 224, 224), interpolation="bicubic", crop_pct=0.875, num_classes=1000, classifier="pred",
    first_conv="downsample_layers.0.0", source="https://github.com/HVision-NKU/Conv2Former (source 001)",
    paper=_PAPER, checkpoint_filter_fn=checkpoint_filter_fn)
# notebook 000: cv2 resize to 32x32, ImageNet mean/std, no crop; its keys are Paddle's own (no PyTorch map)
_CIFAR_CFG = ModelCfg(
    input_size=(3, 32, 32), mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, interpolation="bilinear",
    crop_pct=1.0, num_classes=10, classifier="head", first_conv="fc1", source="notebook 000",
    paper=_PAPER)


def _create(name, cls=Conv2Former, **kwargs):
    return cls(**{**_VARIANTS[name], **kwargs})


@register_model(cfg=_CIFAR_CFG)
def conv2former_n_cifar(**kwargs):
    """Notebook 000's Conv2Former-N for CIFAR-10: 8.85M params (10 classes), 1x1 stem, 32x32 input."""
    return _create("conv2former_n_cifar", cls=Conv2FormerCifar, **kwargs)


@register_model(cfg=_OFFICIAL_CFG)
def conv2former_n(**kwargs):
    """Conv2Former-N (official, 7x7 kernel): 14.99M params, 224x224 input; ``kernel_size=11``: 15.24M."""
    return _create("conv2former_n", **kwargs)


@register_model(cfg=_OFFICIAL_CFG)
def conv2former_t(**kwargs):
    """Conv2Former-T (official, 11x11 kernel): 26.70M params, 224x224 input."""
    return _create("conv2former_t", **kwargs)


@register_model(cfg=_OFFICIAL_CFG)
def conv2former_s(**kwargs):
    """Conv2Former-S (official, 11x11 kernel): 50.03M params, 224x224 input."""
    return _create("conv2former_s", **kwargs)


@register_model(cfg=_OFFICIAL_CFG)
def conv2former_b(**kwargs):
    """Conv2Former-B (official, 11x11 kernel): 90.03M params, 224x224 input."""
    return _create("conv2former_b", **kwargs)


@register_model(cfg=_OFFICIAL_CFG)
def conv2former_l(**kwargs):
    """Conv2Former-L (official, 11x11 kernel): 198.89M params, 224x224 input."""
    return _create("conv2former_l", **kwargs)
