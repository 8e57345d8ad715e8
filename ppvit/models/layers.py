"""Layers shared by every family, written once."""
import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .. import kernels

_trunc_normal = nn.initializer.TruncatedNormal(std=0.02)
_zeros = nn.initializer.Constant(0.0)
_ones = nn.initializer.Constant(1.0)


def trunc_normal_(param, std=0.02):
    nn.initializer.TruncatedNormal(std=std)(param)
    return param


def zeros_(param):
    _zeros(param)
    return param


def ones_(param):
    _ones(param)
    return param


def init_vit_weights(m, conv=False):
    """The notebooks' ``_init_weights``: trunc-normal(.02) Linear (and, with ``conv``, Conv) weights,
    zero biases, LayerNorm/GroupNorm to identity."""
    if isinstance(m, nn.Linear) or (conv and isinstance(m, (nn.Conv1D, nn.Conv2D))):
        _trunc_normal(m.weight)
        if m.bias is not None:
            _zeros(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.GroupNorm, LayerNorm2d)):
        if m.weight is not None:
            _ones(m.weight)
        if m.bias is not None:
            _zeros(m.bias)


def permute(x, perm):
    """``x.transpose(perm)``. In dygraph on a CPU float32 tensor the result is contiguous, made by one C copy
    forward and backward (``kernels.permute``), where Paddle's transpose returns a strided view that the next
    reshape, matmul or gradient copies with a slow generic kernel; elsewhere (a static graph or export, another
    device or dtype, kernels off) Paddle's ``transpose``. The same values either way."""
    y = kernels.permute(x, perm)
    return x.transpose(perm) if y is None else y


def drop_path(x, drop_prob=0.0, training=False):
    """Stochastic depth per sample (the notebooks' ``drop_path``, same math)."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    shape = [x.shape[0]] + [1] * (x.ndim - 1)
    mask = paddle.floor(keep_prob + paddle.rand(shape, dtype=x.dtype))
    return x / keep_prob * mask


class DropPath(nn.Layer):
    def __init__(self, drop_prob=0.0):
        super().__init__()
        self.drop_prob = float(drop_prob or 0.0)

    def forward(self, x):
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self):
        return f"drop_prob={self.drop_prob}"


class Mlp(nn.Layer):
    """fc1 -> act -> drop -> fc2 -> drop (the ViT MLP; keys ``fc1``/``fc2`` as in the notebooks)."""

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=None, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = Linear(in_features, hidden_features)
        self.act = (act_layer or GELU)()
        self.fc2 = Linear(hidden_features, out_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x):
        x = self.drop(self.act(self.fc1(x)))
        return self.drop(self.fc2(x))


class Attention(nn.Layer):
    """Multi-head self-attention over tokens [B, N, C] (keys ``qkv``/``proj``, as ViT, ConViT's MHSA and
    DilateFormer's global stages name them)."""

    def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0.0, proj_drop=0.0):
        super().__init__()
        self.num_heads = num_heads
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.qkv = Linear(dim, dim * 3, bias_attr=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape([-1, N, 3, self.num_heads, C // self.num_heads])
        q, k, v = permute(qkv, [2, 0, 3, 1, 4]).unbind(0)  # each B, heads, N, head_dim
        # scaling q (B.N.C values) rather than the scores (B.heads.N.N) is the same product, cheaper
        attn = F.softmax(paddle.matmul(q * self.scale, k, transpose_y=True), axis=-1)  # B, heads, N, N
        attn = self.attn_drop(attn)
        x = permute(attn @ v, [0, 2, 1, 3]).reshape([-1, N, C])
        return self.proj_drop(self.proj(x))


class LayerNorm2d(nn.Layer):
    """LayerNorm over the channel axis of an NCHW tensor (001's ``data_format="channels_first"``).

    Parameters are ``weight`` and ``bias`` of shape [C], as in the official Conv2Former/ConvNeXt code.
    """

    def __init__(self, num_channels, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = self.create_parameter([num_channels], default_initializer=_ones)
        self.bias = self.create_parameter([num_channels], is_bias=True, default_initializer=_zeros)

    def forward(self, x):
        y = kernels.layer_norm(x, self.weight, self.bias, self.eps, channels_first=True)
        if y is not None:
            return y
        # B, C, H, W -> B, H, W, C for the fused kernel, then back
        x = F.layer_norm(x.transpose([0, 2, 3, 1]), x.shape[1:2], self.weight, self.bias, self.eps)
        return x.transpose([0, 3, 1, 2])


def to_2tuple(x):
    return tuple(x) if isinstance(x, (list, tuple)) else (x, x)


# --------------------------------------------------------------------------------------------------------
# the model contract's shared pieces: one stochastic-depth schedule, one input-size check
# --------------------------------------------------------------------------------------------------------
def drop_path_rates(drop_path_rate, depths):
    """Stochastic-depth rates rising linearly from 0 to ``drop_path_rate`` over all blocks, split per stage.

    depths: blocks per stage, e.g. (2, 2, 6, 2). Returns one list of rates per stage (the notebooks'
    ``linspace(0, drop_path_rate, sum(depths))``, cut at the stage boundaries).
    """
    depths = [int(d) for d in depths]
    rates = np.linspace(0.0, float(drop_path_rate or 0.0), sum(depths)).tolist()
    out, start = [], 0
    for d in depths:
        out.append(rates[start:start + d])
        start += d
    return out


def check_input_size(x, img_size, model_name):
    """Raise ``ValueError`` unless the NCHW tensor ``x`` is ``img_size`` = (H, W) high and wide.

    For models whose parameters or buffers are built for one input size (position embeddings, relative
    position tables, fixed patch grids). A dimension of -1 (dynamic, while tracing for export) passes. The
    message names the expected and received sizes and both fixes: resize the input, or build the model
    for the size (``img_size=`` for ``create_model``, ``-o Arch.img_size=`` on the command line).
    """
    h, w = int(x.shape[2]), int(x.shape[3])
    eh, ew = img_size
    if (h != -1 and h != eh) or (w != -1 and w != ew):
        size = h if h == w else (h, w)
        raise ValueError(
            f"{model_name} was built for {eh}x{ew} inputs (img_size), got {h}x{w}: resize the images to "
            f"{eh}x{ew}, or build the model for this size (create_model(..., img_size={size!r}); "
            f"on the command line -o Arch.img_size={size!r})")


# --------------------------------------------------------------------------------------------------------
# convolutions and norms with nn's parameters and keys, whose dygraph CPU speed is ppvit.kernels' business
# --------------------------------------------------------------------------------------------------------
class Conv2D(nn.Conv2D):
    """``nn.Conv2D`` (same arguments, parameters and state_dict keys). Its forward is ``nn.Conv2D``'s maths; in
    dygraph ``ppvit.kernels.conv2d`` may compute it (a 1x1 conv as a matmul, the bias added in Paddle's fast
    layout; the same values to float32 rounding), and ``ppvit.kernels.set_enabled(False)`` makes it exactly
    ``nn.Conv2D``. Input [B, C_in, H, W] -> [B, C_out, H', W']."""

    def forward(self, x):
        y = kernels.conv2d(self, x)
        return nn.Conv2D.forward(self, x) if y is None else y  # explicit: to_static's rewrite breaks super()


class DepthwiseConv2D(Conv2D):
    """``nn.Conv2D(in_channels, out_channels, kernel_size, ..., groups=in_channels)`` with the same arguments,
    parameters (``weight`` [C, 1, k, k], ``bias`` [C]) and state_dict keys, so checkpoints load unchanged.

    Input and output [B, C, H, W]. Its forward is the depthwise correlation; in dygraph on CPU
    ``ppvit.kernels.depthwise_conv2d`` computes it by a formulation Paddle runs faster (outputs and gradients
    agree with Paddle's op to float32 rounding, tested in tests/test_dwconv.py). Raises ValueError unless
    ``groups == in_channels == out_channels``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=None,
                 **kwargs):
        groups = in_channels if groups is None else groups
        if not (groups == in_channels == out_channels):
            raise ValueError(f"DepthwiseConv2D needs groups == in_channels == out_channels, got groups={groups}, "
                             f"in_channels={in_channels}, out_channels={out_channels}; use nn.Conv2D otherwise")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, **kwargs)

    def forward(self, x):
        y = kernels.depthwise_conv2d(self, x)
        return Conv2D.forward(self, x) if y is None else y


class Linear(nn.Linear):
    """``nn.Linear`` (same arguments, parameters ``weight`` [in, out] / ``bias`` [out], keys and maths). In dygraph
    training on CPU, ``ppvit.kernels.linear`` computes it with the bias gradient as a matrix product.
    Input [..., in] -> [..., out]."""

    def forward(self, x):
        y = kernels.linear(x, self.weight, self.bias)
        return nn.Linear.forward(self, x) if y is None else y


class LayerNorm(nn.LayerNorm):
    """``nn.LayerNorm`` (same arguments, parameters, keys and maths). Over one trailing axis in dygraph on CPU,
    ``ppvit.kernels.layer_norm`` computes it (forward and backward) by ppvit's C loop. Any shape [..., C]."""

    def forward(self, x):
        y = None
        if len(self._normalized_shape) == 1:
            y = kernels.layer_norm(x, self.weight, self.bias, self._epsilon)
        return nn.LayerNorm.forward(self, x) if y is None else y


class GELU(nn.GELU):
    """``nn.GELU`` (the exact erf form by default). In dygraph on CPU, ``ppvit.kernels.gelu`` computes the exact
    form (forward and backward) by ppvit's C loop. Any shape."""

    def forward(self, x):
        y = None if self._approximate else kernels.gelu(x)
        return nn.GELU.forward(self, x) if y is None else y


class BatchNorm2D(nn.BatchNorm2D):
    """``nn.BatchNorm2D`` (same arguments, parameters ``weight``/``bias``/``_mean``/``_variance``, state_dict keys
    and maths). Input and output [B, C, H, W]. In dygraph training on CPU, ``ppvit.kernels.batch_norm`` computes
    it (batch statistics, forward and backward, the running statistics updated as Paddle does) by a C loop."""

    def forward(self, x):
        y = kernels.batch_norm(self, x)
        return nn.BatchNorm2D.forward(self, x) if y is None else y


class PostActBatchNorm2D(BatchNorm2D):
    """A ``BatchNorm2D`` that follows an activation (ConvMixer's conv -> GELU -> BN), where no fuse pass folds it
    into a conv: ``ppvit.deploy.rewrites`` runs it in exported programs as the same per-channel affine in a 1x1
    depthwise conv. Same arguments, parameters, keys and maths as ``nn.BatchNorm2D``."""
