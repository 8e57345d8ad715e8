"""Export-time module swaps: the same maths in ops Paddle Inference's oneDNN runs fast, applied to a copy of the
model just before ``paddle.jit.save`` (as PaddleClas's ``upgrade_sublayer`` and timm's ``reparameterize``).

``for_export(model)`` returns an eval-mode deep copy of ``model`` with every rewrite below applied (the model
itself is untouched, so dygraph, training and checkpoints never see them):

- ``LayerNorm2d`` followed by unpadded, ungrouped convs (Conv2Former's blocks and downsamplings): the norm
  without its affine and without moving the channel axis (``NormalizeOnly``), its affine folded into each conv
  (``AffineFoldedConv``). Paddle 3.3's oneDNN predictor keeps activations channels-last in memory but turns each
  transpose of ``LayerNorm2d.forward`` into a real copy and the one back to NCHW into a reorder per consumer
  (~22% of conv2former_n_cifar's bf16 forward, measured).
- ``GroupNorm(1, C)`` followed by an unpadded conv (Conv2Former's notebook downsampling): a LayerNorm over each
  sample's C*H*W values, the affine folded into the conv. Paddle's group_norm has no oneDNN kernel, so the bf16
  predictor ran it in fp32 between conversions and layout reorders.
- ``DepthwiseConv2D``: Paddle's depthwise op with a kernel larger than twice the map cropped to the taps that
  reach it, and, for Conv2Former's modulation conv (no activation follows it), the bias added after the conv
  (``ExportDepthwiseConv2D``).
- ``layers.PostActBatchNorm2D`` in eval mode: the same per-channel affine as a 1x1 depthwise conv
  (``BatchNormAsDepthwiseConv``).
- DilateFormer's ``DilateAttention``: its zero padding as the pad3d op (``ExportDilateAttention``).

Every rewrite is exact maths (float32 results agree to rounding); ``export_model`` verifies every backend
against the dygraph model, and tests/test_conv2former_export.py, test_convmixer_export.py, test_dwconv.py and
test_dilateformer.py check each against Paddle's plain ops.
"""
import copy

import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from ..kernels.depthwise import same_padding_odd_kernel
from ..models import conv2former, dilateformer
from ..models.layers import Conv2D, DepthwiseConv2D, LayerNorm2d, PostActBatchNorm2D

__all__ = ["AffineFoldedConv", "BatchNormAsDepthwiseConv", "ExportDepthwiseConv2D", "ExportDilateAttention",
           "NormalizeOnly", "affine_folds_into", "apply_rewrites", "conv_after_affine", "for_export"]


def _no_hooks(layer):
    return not layer._forward_pre_hooks and not layer._forward_post_hooks


# --------------------------------------------------------------------------------------------------------
# a per-channel affine before an unpadded conv, folded into the conv
# --------------------------------------------------------------------------------------------------------
def affine_folds_into(conv):
    """True for a conv that a per-input-channel affine before it folds into exactly: a plain ``nn.Conv2D`` or
    ``layers.Conv2D`` without hooks that never pads (explicit or 'valid' zero padding; Paddle records
    ``padding='same'`` as zeros plus the SAME algorithm, which does pad), ungrouped, NCHW."""
    return (type(conv) in (nn.Conv2D, Conv2D) and _no_hooks(conv)
            and conv._data_format == "NCHW" and conv._groups == 1 and conv._padding_mode == "zeros"
            and conv._padding_algorithm in ("EXPLICIT", "VALID") and all(int(q) == 0 for q in conv._updated_padding))


def conv_after_affine(conv, x, gamma, beta):
    """``conv(x * gamma + beta)`` (gamma, beta: [C], per input channel) as one conv: weight * gamma per input
    channel, bias + the sum of weight * beta; exact because the conv never pads (``affine_folds_into``).
    x: [B, C, H, W] -> ``conv``'s output. Raises ValueError for a conv the affine does not fold into."""
    if not affine_folds_into(conv):
        raise ValueError(f"an affine folds only into an unpadded, ungrouped NCHW nn.Conv2D without hooks, "
                         f"got {conv!r}; run the norm and the conv instead")
    c = gamma.shape[0]
    weight = conv.weight * gamma.reshape([1, c, 1, 1])
    shift = (conv.weight * beta.reshape([1, c, 1, 1])).sum([1, 2, 3])
    bias = shift if conv.bias is None else conv.bias + shift
    return F.conv2d(x, weight, bias, conv._stride, 0, conv._dilation, 1)


class AffineFoldedConv(nn.Layer):
    """``conv(x * gamma + beta)`` as one conv (``conv_after_affine``); gamma and beta are the preceding norm's
    affine ([C]). [B, C, H, W] -> ``conv``'s output. Raises ValueError for a conv the affine does not fold into."""

    def __init__(self, conv, gamma, beta):
        super().__init__()
        if not affine_folds_into(conv):
            raise ValueError(f"an affine folds only into an unpadded, ungrouped NCHW nn.Conv2D without hooks, "
                             f"got {conv!r}; run the norm and the conv instead")
        self.conv, self.gamma, self.beta = conv, gamma, beta

    def forward(self, x):
        return conv_after_affine(self.conv, x, self.gamma, self.beta)


class NormalizeOnly(nn.Layer):
    """``LayerNorm2d`` without its affine: ``(x - mean) / sqrt(var + eps)`` over the channels of [B, C, H, W].

    The mean and the variance are 1x1 convs with 1/C weights (one output channel) and the rest broadcasts over
    C, so the tensor never leaves NCHW (no transposes). The mean is added negated (``x + conv(x, -1/C)``): the
    bf16 predictor runs ``add`` in bf16 but ``subtract`` in fp32, between two conversions. Two-pass like
    LayerNorm (variance of the centred values), so float32 results agree to rounding.
    """

    def __init__(self, norm):
        super().__init__()
        self.eps = norm.eps

    def forward(self, x):
        c = int(x.shape[1])
        centred = x + F.conv2d(x, paddle.full([1, c, 1, 1], -1.0 / c, dtype=x.dtype))
        var = F.conv2d(centred * centred, paddle.full([1, c, 1, 1], 1.0 / c, dtype=x.dtype))
        return centred * paddle.rsqrt(var + self.eps)


class _GroupNormOneGroupNoAffine(nn.Layer):
    """``GroupNorm(1, C)`` without its affine: LayerNorm over each sample's C*H*W values (oneDNN has a kernel for
    layer_norm, none for group_norm); with sizes unknown at trace time (-1), the group_norm op without affine."""

    def __init__(self, norm):
        super().__init__()
        self.eps = norm._epsilon

    def forward(self, x):
        C, H, W = (int(d) for d in x.shape[1:])
        if min(C, H, W) <= 0:
            return F.group_norm(x, 1, self.eps)
        return F.layer_norm(x.reshape([-1, C * H * W]), [C * H * W], None, None, self.eps).reshape([-1, C, H, W])


def fold_layernorm2d(parent, norm_name, conv_names):
    """In ``parent``, run the ``LayerNorm2d`` ``norm_name`` as ``NormalizeOnly`` and fold its affine into each
    conv of ``conv_names`` (sublayer paths such as ``"fc1"`` or ``"att.0"``), which must be all the norm's
    consumers. Returns False (and changes nothing) when a conv does not take the fold or the norm has hooks."""
    norm = _get(parent, norm_name)
    convs = [_get(parent, n) for n in conv_names]
    if not isinstance(norm, LayerNorm2d) or not _no_hooks(norm) or not all(map(affine_folds_into, convs)):
        return False
    for name, conv in zip(conv_names, convs):
        _set(parent, name, AffineFoldedConv(conv, norm.weight, norm.bias))
    _set(parent, norm_name, NormalizeOnly(norm))
    return True


def _fold_groupnorm(seq):
    norm, conv = seq[0], seq[1]
    if norm._num_groups != 1 or not _no_hooks(norm) or not affine_folds_into(conv):
        return False
    _set(seq, "1", AffineFoldedConv(conv, norm.weight, norm.bias))
    _set(seq, "0", _GroupNormOneGroupNoAffine(norm))
    return True


# --------------------------------------------------------------------------------------------------------
# depthwise convs, BatchNorm, DilateFormer's padding
# --------------------------------------------------------------------------------------------------------
class ExportDepthwiseConv2D(nn.Layer):
    """A ``DepthwiseConv2D`` ('same' padding, odd square kernel, stride 1: ``same_padding_odd_kernel``) as
    Paddle's depthwise op with the kernel cropped to the taps that can reach an H x W map. With 'same' padding,
    output o reads input o + t - k//2 through tap t, so only the central min(k, 2H - 1) rows (and 2W - 1
    columns) of taps ever meet the map; the others always multiply zero padding. Dropping them is the same sum,
    and it matters: oneDNN's bf16 depthwise kernel refuses a padding of k//2 >= the map (Conv2Former's 11x11
    kernel on its 4x4 last stage) and falls back to an im2col GEMM ~100x slower (measured: a quarter of the whole
    bf16 forward). Sizes unknown at trace time (-1) keep the full kernel.

    ``separate_bias``: the bias is added after the conv, written ``bias + conv(x)``: oneDNN's faster bf16
    depthwise kernel (brdgmm) takes no fp32 bias and Paddle always passes one, so a conv with a bias runs the
    older jit_dw kernel; Paddle Inference's conv2d_bias_fuse_pass folds ``conv(x) + bias`` back into the conv,
    but not the bias as the first operand. Measured (bf16 predictor, 2 cores): Conv2Former's 11x11 modulation
    convs, which no activation follows, 1.13x the whole forward; where an activation follows (ConvMixer's 7x7 +
    ReLU, Conv2Former's 3x3 + GELU) it no longer fuses into the conv and the forward was 0.89-0.94x, so those
    keep the fused bias. [B, C, H, W] -> [B, C, H, W].
    """

    def __init__(self, conv, separate_bias=False):
        super().__init__()
        if not same_padding_odd_kernel(conv):
            raise ValueError(f"only a depthwise conv with 'same' zero padding, an odd square kernel and stride 1 "
                             f"is cropped, got {conv!r}")
        self.conv = conv
        self.separate_bias = bool(separate_bias) and conv.bias is not None

    def forward(self, x):
        conv = self.conv
        k = conv._kernel_size[0]
        h, w = int(x.shape[2]), int(x.shape[3])
        kh = k if h <= 0 else min(k, 2 * h - 1)
        kw = k if w <= 0 else min(k, 2 * w - 1)
        if (kh, kw) == (k, k) and not self.separate_bias:
            return conv(x)  # Paddle's own op (the kernels never run in a static graph)
        top, left = (k - kh) // 2, (k - kw) // 2
        weight = conv.weight if (kh, kw) == (k, k) else conv.weight[:, :, top:top + kh, left:left + kw]
        y = F.conv2d(x, weight, None if self.separate_bias else conv.bias, 1, [kh // 2, kw // 2], 1, conv._groups)
        return conv.bias.reshape([1, -1, 1, 1]) + y if self.separate_bias else y


class BatchNormAsDepthwiseConv(nn.Layer):
    """An eval-mode NCHW BatchNorm as the same per-channel affine in a 1x1 depthwise conv: weight
    ``w / sqrt(var + eps)`` [C, 1, 1, 1], bias ``b - mean * scale``. [B, C, H, W] -> [B, C, H, W].

    Why: in Paddle 3.3's bf16 oneDNN predictor, batch_norm runs in fp32 with a reorder from and to bf16 around
    it; where a BatchNorm follows an activation (ConvMixer's conv -> GELU -> BN) no fuse pass folds it into a
    conv, and those BNs and their reorders were half of convmixer_256_8's bf16 forward. A depthwise conv stays
    in bf16, and a following residual add fuses into it as a oneDNN post-op (measured: 325 -> ~700 images/s,
    batch 64, 2 cores).
    """

    def __init__(self, bn):
        super().__init__()
        self.bn = bn

    def forward(self, x):
        bn = self.bn
        scale = paddle.rsqrt(bn._variance + bn._epsilon)
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn._mean * scale
        if bn.bias is not None:
            shift = shift + bn.bias
        c = scale.shape[0]
        return F.conv2d(x, scale.reshape([c, 1, 1, 1]), shift, groups=c)


def pad_hw_pad3d(t, top, bottom, left, right):
    """``dilateformer.pad_hw`` by the pad3d op on a [1, 1, H, W, rest] NCDHW view: Paddle 3.3's oneDNN ``pad``
    kernel corrupts memory, and a program holding it has to run without oneDNN (see ppvit/deploy/predictor.py);
    pad3d's oneDNN kernel is fine (in NCDHW; it fails in NDHWC)."""
    H, W = t.shape[:2]
    rest = t.shape[2:]
    t = F.pad(t.reshape([1, 1, H, W, -1]), [0, 0, left, right, top, bottom], data_format="NCDHW")
    return t.reshape([H + top + bottom, W + left + right, -1] + rest[1:])  # batch (rest[0]) may be -1


class ExportDilateAttention(nn.Layer):
    """DilateFormer's ``DilateAttention`` (no parameters) with its zero padding as pad3d (``pad_hw_pad3d``)."""

    def __init__(self, attn):
        super().__init__()
        self.attn = attn

    def forward(self, q, k, v):
        a = self.attn
        return dilateformer.dilate_attention(q, k, v, a.head_dim, a.dilation, a.kernel_size, a.scale, a.attn_drop,
                                             pad=pad_hw_pad3d)


# --------------------------------------------------------------------------------------------------------
# applying them
# --------------------------------------------------------------------------------------------------------
def _get(parent, path):
    for name in path.split("."):
        parent = parent._sub_layers[name]
    return parent


def _set(parent, path, layer):
    *up, name = path.split(".")
    for n in up:
        parent = parent._sub_layers[n]
    parent._sub_layers[name] = layer  # in place: an nn.Sequential keeps its order


_WRAPPERS = (AffineFoldedConv, ExportDepthwiseConv2D, BatchNormAsDepthwiseConv, ExportDilateAttention)


def apply_rewrites(model):
    """Apply every rewrite of this module to ``model`` in place (it should be in eval mode, and a copy: see
    ``for_export``); returns ``model``, or its replacement when ``model`` itself is a layer a rewrite swaps."""
    for layer in list(model.sublayers(include_self=True)):
        if isinstance(layer, conv2former.SpatialAttention):
            mod = layer.modulator_name
            fold_layernorm2d(layer, "norm", [f"{mod}.0", "v"])
            if isinstance(_get(layer, f"{mod}.2"), DepthwiseConv2D) and same_padding_odd_kernel(_get(layer, f"{mod}.2")):
                # nothing activation-like follows the modulation conv: its bias goes after it (see the class)
                _set(layer, f"{mod}.2", ExportDepthwiseConv2D(_get(layer, f"{mod}.2"), separate_bias=True))
        elif isinstance(layer, conv2former.MLP):
            fold_layernorm2d(layer, "norm", ["fc1"])
        elif isinstance(layer, conv2former.NormConvDownsample):
            fold_layernorm2d(layer, "0", ["1"])
        elif isinstance(layer, conv2former.GroupNormDownsample):
            _fold_groupnorm(layer)
    for parent in list(model.sublayers(include_self=True)):
        if isinstance(parent, _WRAPPERS):
            continue  # what a rewrite wraps is already rewritten
        for name, child in list(parent._sub_layers.items()):
            parent._sub_layers[name] = _swapped(child) or child
    return _swapped(model) or model


def _swapped(layer):
    """The export module that runs ``layer`` (a depthwise conv, BatchNorm or dilated attention), or None."""
    if isinstance(layer, DepthwiseConv2D) and same_padding_odd_kernel(layer):
        return ExportDepthwiseConv2D(layer)
    if (isinstance(layer, PostActBatchNorm2D) and not layer.training and layer._data_format == "NCHW"
            and getattr(layer, "_use_global_stats", None) is not False):
        return BatchNormAsDepthwiseConv(layer)
    if isinstance(layer, dilateformer.DilateAttention):
        return ExportDilateAttention(layer)
    return None


def for_export(model):
    """An eval-mode deep copy of ``model`` with every export rewrite applied (``apply_rewrites``): what
    ``export_model`` saves with ``paddle.jit.save``. ``model`` itself is left as it was."""
    was_training = model.training
    model.eval()
    try:
        exported = copy.deepcopy(model)
    finally:
        model.train(was_training)
    exported.eval()
    return apply_rewrites(exported)
