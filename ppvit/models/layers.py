"""Layers shared by every family, written once."""
import contextlib
import threading

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F
from paddle import _C_ops  # matmul by the op, not paddle.matmul: FlopCounter patches that

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

    def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.0):
        super().__init__()
        out_features = out_features or in_features
        hidden_features = hidden_features or in_features
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = act_layer()
        self.fc2 = nn.Linear(hidden_features, out_features)
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
        self.qkv = nn.Linear(dim, dim * 3, bias_attr=qkv_bias)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape([-1, N, 3, self.num_heads, C // self.num_heads])
        q, k, v = qkv.transpose([2, 0, 3, 1, 4]).unbind(0)  # each B, heads, N, head_dim
        # scaling q (B.N.C values) rather than the scores (B.heads.N.N) is the same product, cheaper
        attn = F.softmax(paddle.matmul(q * self.scale, k, transpose_y=True), axis=-1)  # B, heads, N, N
        attn = self.attn_drop(attn)
        x = (attn @ v).transpose([0, 2, 1, 3]).reshape([-1, N, C])
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
        # B, C, H, W -> B, H, W, C for the fused kernel, then back
        x = F.layer_norm(x.transpose([0, 2, 3, 1]), x.shape[1:2], self.weight, self.bias, self.eps)
        return x.transpose([0, 3, 1, 2])

    # ---- exported programs: the same maths without moving the channel axis (see ``fold_into``) ----
    def can_fold(self, x, conv):
        """True when ``conv(self(x))`` can run as ``fold_into(conv, self.normalize(x))``: a static graph
        (export; dygraph and training keep ``forward``), NCHW with a known channel count, no hooks on the norm,
        and ``conv`` one ``affine_folds_into`` accepts, on this norm's channels."""
        return (not paddle.in_dynamic_mode() and len(x.shape) == 4 and int(x.shape[1]) == self.weight.shape[0]
                and not self._forward_pre_hooks and not self._forward_post_hooks and affine_folds_into(conv))

    def normalize(self, x):
        """``(x - mean) / sqrt(var + eps)`` over the channels of [B, C, H, W], without the affine.

        The mean and the variance are 1x1 convs with 1/C weights (one output channel) and the rest
        broadcasts over C, so the tensor never leaves NCHW. Why: ``forward``'s transposes cost more than the
        norm in Paddle 3.3's oneDNN predictor, which keeps activations channels-last in memory but turns each
        transpose into a real copy, and the one back to NCHW into a reorder per consumer (~22% of
        conv2former_n_cifar's bf16 forward, measured). The mean is added negated (``x + conv(x, -1/C)``): the
        bf16 predictor runs ``add`` in bf16 but ``subtract`` in fp32, between two conversions.
        Two-pass like LayerNorm (variance of the centred values), so float32 results agree to rounding.
        """
        c = int(x.shape[1])
        centred = x + F.conv2d(x, paddle.full([1, c, 1, 1], -1.0 / c, dtype=x.dtype))
        var = F.conv2d(centred * centred, paddle.full([1, c, 1, 1], 1.0 / c, dtype=x.dtype))
        return centred * paddle.rsqrt(var + self.eps)

    def fold_into(self, conv, normalized):
        """``conv(self(x))`` from ``normalized = self.normalize(x)``: this norm's affine folded into ``conv``
        (``conv_after_affine``). [B, C, H, W] -> ``conv``'s output. Raises ValueError for a conv the affine does
        not fold into (padding, groups, NHWC, hooks, another conv class)."""
        return conv_after_affine(conv, normalized, self.weight, self.bias)


def affine_folds_into(conv):
    """True for a conv that a per-input-channel affine before it folds into exactly: a plain ``nn.Conv2D`` or
    ``layers.Conv2D`` without hooks that never pads (explicit or 'valid' zero padding; Paddle records
    ``padding='same'`` as zeros plus the SAME algorithm, which does pad), ungrouped, NCHW."""
    return (type(conv) in (nn.Conv2D, Conv2D) and not conv._forward_pre_hooks and not conv._forward_post_hooks
            and conv._data_format == "NCHW" and conv._groups == 1 and conv._padding_mode == "zeros"
            and conv._padding_algorithm in ("EXPLICIT", "VALID") and all(int(q) == 0 for q in conv._updated_padding))


def conv_after_affine(conv, x, gamma, beta):
    """``conv(x * gamma + beta)`` (gamma, beta: [C], per input channel) as one conv: weight * gamma per input
    channel, bias + the sum of weight * beta; exact because the conv never pads (``affine_folds_into``).
    x: [B, C, H, W] -> ``conv``'s output. Used by exported programs (LayerNorm2d, Conv2Former's GroupNorm
    downsampling). Raises ValueError for a conv the affine does not fold into."""
    if not affine_folds_into(conv):
        raise ValueError(f"an affine folds only into an unpadded, ungrouped NCHW nn.Conv2D without hooks, "
                         f"got {conv!r}; run the norm and the conv instead")
    c = gamma.shape[0]
    weight = conv.weight * gamma.reshape([1, c, 1, 1])
    shift = (conv.weight * beta.reshape([1, c, 1, 1])).sum([1, 2, 3])
    bias = shift if conv.bias is None else conv.bias + shift
    return F.conv2d(x, weight, bias, conv._stride, 0, conv._dilation, 1)


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
# depthwise convolution: the same layer as ``nn.Conv2D(C, C, k, groups=C)``, computed faster on CPU
# --------------------------------------------------------------------------------------------------------
# Paddle's dygraph depthwise conv on CPU is a naive loop (an 11x11 kernel on 64x64x32x32 is ~80x slower than
# PyTorch's), while its matmul and FFT kernels are fast (MKL). ``DepthwiseConv2D`` keeps nn.Conv2D's
# parameters (``weight`` [C, 1, k, k], ``bias`` [C]) and, in dygraph on CPU, computes the same correlation by
# whichever exact formulation measured fastest for the shape (``_select_formulation``):
#   "toeplitz": per channel, the map as a vector times a (HW x HW) matrix built from the kernel taps by a
#               one-hot matmul (small maps, where the kernel covers most of the map: one batched matmul);
#   "rows":     a (K.W x W) banded matrix per channel times the K shifted rows of each output row
#               (small kernels on mid-size maps: one batched matmul, K times fewer products than "toeplitz");
#   "fft":      correlation by rfft2/irfft2 on an FFT-friendly padded size, with a hand-written backward that
#               is again two FFT correlations (large kernels on large maps);
#   "plain":    Paddle's own kernel (also for small work, where the others' fixed overheads dominate).
# Each has an exact gradient (hand-written backwards for the three matrix/FFT forms). Static graphs (paddle.jit.to_static / paddle.jit.save), GPUs and every configuration other than stride 1,
# dilation 1, an odd square kernel with 'same' zero padding, NCHW and float32 always use Paddle's kernel,
# so exported programs keep the plain depthwise_conv2d op (oneDNN runs it fast in the predictor), with a kernel
# larger than twice the map cropped to the taps that reach it (``DepthwiseConv2D._static_forward``).


DEPTHWISE_FORMULATIONS = ("plain", "toeplitz", "rows", "fft")
_force = threading.local()


@contextlib.contextmanager
def depthwise_formulation(name):
    """Force every ``DepthwiseConv2D`` in this thread to one formulation while the context is active:
    ``"reference"`` is exactly ``nn.Conv2D``'s forward (Paddle's op and its bias add, as before this layer
    existed: what tests and benchmarks compare against; it also turns ``Conv2D``'s fast bias add off), ``"auto"`` the shape rule, or one of
    ``DEPTHWISE_FORMULATIONS``. Raises ValueError for another name."""
    if name not in DEPTHWISE_FORMULATIONS + ("reference", "auto"):
        raise ValueError(f"unknown depthwise formulation {name!r}: use one of "
                         f"{('reference', 'auto') + DEPTHWISE_FORMULATIONS}")
    previous = getattr(_force, "name", None)
    _force.name = None if name == "auto" else name
    try:
        yield
    finally:
        _force.name = previous


def _fft_size(n):
    """Smallest m >= n whose prime factors are 2, 3 and 5 (fast sizes for the FFT)."""
    while True:
        m = n
        for f in (2, 3, 5):
            while m % f == 0:
                m //= f
        if m == 1:
            return n
        n += 1


_index_cache = {}


def _one_hot_taps(taps, k):
    """float32 [k*k, n] with a 1 where entry j of a gathered matrix holds kernel tap ``taps[j]`` (a tap of k*k
    marks a structural zero). ``weight [C, k*k] @ this`` builds the matrix by a matmul (Paddle's gather and
    its scatter-add gradient are several times slower on CPU), and ``grad [C, n] @ this.T`` is that
    product's exact weight gradient: each entry is a sum of the gradient entries of one tap."""
    one_hot = np.zeros((k * k, taps.size), dtype="float32")
    inside = taps < k * k
    one_hot[taps[inside], np.nonzero(inside)[0]] = 1.0
    return paddle.to_tensor(one_hot)


def _toeplitz_operator(h, w, k):
    """[k*k, HW*HW] one-hot: entry (q, o) of a channel's matrix is the tap ky*k + kx by which input position
    q = (hq, wq) enters output position o = (ho, wo), with ky = hq - ho + k//2, kx = wq - wo + k//2."""
    key = ("toeplitz", h, w, k)
    if key not in _index_cache:
        p = k // 2
        hq, wq, ho, wo = np.meshgrid(np.arange(h), np.arange(w), np.arange(h), np.arange(w), indexing="ij")
        ky, kx = hq - ho + p, wq - wo + p
        inside = (ky >= 0) & (ky < k) & (kx >= 0) & (kx < k)
        _index_cache[key] = _one_hot_taps(np.where(inside, ky * k + kx, k * k).reshape(-1), k)
    return _index_cache[key]


def _rows_operator(h, w, k):
    """(row index [H*K] into the map with a zero row appended at H, [k*k, K*W*W] one-hot of the banded
    matrix): output row ho reads input rows ho+ky-p; band entry (ky, wq, wo) is tap (ky, wq - wo + p)."""
    key = ("rows", h, w, k)
    if key not in _index_cache:
        p = k // 2
        ho, ky = np.meshgrid(np.arange(h), np.arange(k), indexing="ij")
        r = ho + ky - p
        rows = np.where((r >= 0) & (r < h), r, h).reshape(-1)
        kyy, wq, wo = np.meshgrid(np.arange(k), np.arange(w), np.arange(w), indexing="ij")
        kx = wq - wo + p
        band = np.where((kx >= 0) & (kx < k), kyy * k + kx, k * k).reshape(-1)
        _index_cache[key] = (paddle.to_tensor(rows.astype("int64")), _one_hot_taps(band, k))
    return _index_cache[key]


def _dw_plain(x, weight):
    k = weight.shape[-1]
    return _C_ops.depthwise_conv2d(x, weight, [1, 1], [k // 2, k // 2], "EXPLICIT", x.shape[1], [1, 1], "NCHW")


def _taps_matrix(weight, operator, shape):
    c, k = weight.shape[0], weight.shape[-1]
    return _C_ops.matmul(weight.reshape([c, k * k]), operator, False, False).reshape(shape)


def _taps_grad(grad_matrix, operator, weight_shape):
    c = weight_shape[0]
    return _C_ops.matmul(grad_matrix.reshape([c, -1]), operator, False, True).reshape(weight_shape)


class _ToeplitzCorrelation(paddle.autograd.PyLayer):
    """Each channel's map as a vector [HW] times its [HW, HW] correlation matrix: y_c = x_c M_c, all channels
    in one batched matmul [C, B, HW] @ [C, HW, HW]. M is rebuilt in the backward rather than kept (it is
    HW/k^2 times the kernel's size per channel)."""

    @staticmethod
    def forward(ctx, x, weight):
        B, C, H, W = x.shape
        operator = _toeplitz_operator(H, W, weight.shape[-1])
        matrix = _taps_matrix(weight, operator, [C, H * W, H * W])  # C, q, o
        xt = x.reshape([B, C, H * W]).transpose([1, 0, 2])  # C, B, HW
        ctx.save_for_backward(x, weight)
        return _C_ops.matmul(xt, matrix, False, False).transpose([1, 0, 2]).reshape([B, C, H, W])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensor()
        B, C, H, W = x.shape
        operator = _toeplitz_operator(H, W, weight.shape[-1])
        matrix = _taps_matrix(weight, operator, [C, H * W, H * W])
        xt = x.reshape([B, C, H * W]).transpose([1, 0, 2])  # C, B, HW
        gt = grad.reshape([B, C, H * W]).transpose([1, 0, 2])  # C, B, HW
        grad_x = _C_ops.matmul(gt, matrix, False, True).transpose([1, 0, 2]).reshape([B, C, H, W])
        grad_matrix = _C_ops.matmul(xt, gt, True, False)  # C, q, o
        return grad_x, _taps_grad(grad_matrix, operator, weight.shape)


def _shifted_rows(x, rows, k):
    """[C, B*H, K*W]: for each output row, the K input rows of its window side by side (zeros off the map)."""
    B, C, H, W = x.shape
    xt = paddle.concat([x.transpose([1, 0, 2, 3]), paddle.zeros([C, B, 1, W], x.dtype)], axis=2)  # C, B, H+1, W
    return paddle.gather(xt, rows, axis=2).reshape([C, B * H, k * W])


def _rows_forward(x, weight, rows, operator):
    B, C, H, W = x.shape
    k = weight.shape[-1]
    band = _taps_matrix(weight, operator, [C, k * W, W])  # C, (ky, wq), wo
    y = _C_ops.matmul(_shifted_rows(x, rows, k), band, False, False)  # C, B*H, W
    return y.reshape([C, B, H, W]).transpose([1, 0, 2, 3])


class _RowsCorrelation(paddle.autograd.PyLayer):
    """Output row ho of channel c = [rows ho-p .. ho+p of x_c side by side] @ a banded [K*W, W] matrix per
    channel (one batched matmul). Backward: dx is the same correlation of the gradient with the flipped
    kernel ('same' padding, odd k), and the band's gradient is shifted_rows^T @ grad, mapped to the taps."""

    @staticmethod
    def forward(ctx, x, weight):
        B, C, H, W = x.shape
        rows, operator = _rows_operator(H, W, weight.shape[-1])
        ctx.save_for_backward(x, weight)
        return _rows_forward(x, weight, rows, operator)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensor()
        B, C, H, W = x.shape
        k = weight.shape[-1]
        rows, operator = _rows_operator(H, W, k)
        grad_x = _rows_forward(grad, paddle.flip(weight, [2, 3]), rows, operator)
        gt = grad.transpose([1, 0, 2, 3]).reshape([C, B * H, W])
        grad_band = _C_ops.matmul(_shifted_rows(x, rows, k), gt, True, False)  # C, K*W, W
        return grad_x, _taps_grad(grad_band, operator, weight.shape)


def _dw_toeplitz(x, weight):
    return _ToeplitzCorrelation.apply(x, weight)


def _dw_rows(x, weight):
    return _RowsCorrelation.apply(x, weight)


class _FFTCorrelation(paddle.autograd.PyLayer):
    """y = x correlated with w ('same' zero padding, odd k) through rfft2 on an (Nh, Nw) grid with
    Nh >= H + k//2: the kernel is flipped and centred on the origin so y is the circular convolution's top-left
    H x W corner, and Nh >= max(H + k//2, k) keeps every wrapped-around tap on zero padding. The backward uses the
    same identities: dx = irfft2(G conj(V)), dv = irfft2(sum_b G conj(X)), mapped back to the kernel taps."""

    @staticmethod
    def forward(ctx, x, weight):
        B, C, H, W = x.shape
        k = weight.shape[-1]
        p = k // 2
        size = [_fft_size(max(H + p, k)), _fft_size(max(W + p, k))]
        v = paddle.flip(weight.reshape([1, C, k, k]), [2, 3])
        v = F.pad(v, [0, size[1] - k, 0, size[0] - k]).reshape([C, *size])
        v = paddle.roll(v, [-p, -p], [1, 2])  # tap (p, p) at the origin
        spectrum_v = paddle.fft.rfft2(v)
        y = paddle.fft.irfft2(paddle.fft.rfft2(x, s=size) * spectrum_v, s=size)[:, :, :H, :W]
        ctx.save_for_backward(x, spectrum_v)
        ctx.geometry = (size, k)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, spectrum_v = ctx.saved_tensor()
        size, k = ctx.geometry
        B, C, H, W = x.shape
        p = k // 2
        spectrum_g = paddle.fft.rfft2(grad, s=size)
        grad_x = paddle.fft.irfft2(spectrum_g * paddle.conj(spectrum_v), s=size)[:, :, :H, :W]
        cross = (spectrum_g * paddle.conj(paddle.fft.rfft2(x, s=size))).sum(0)  # C, Nh, Nw/2+1
        grad_v = paddle.roll(paddle.fft.irfft2(cross, s=size), [p, p], [1, 2])[:, :k, :k]
        grad_w = paddle.flip(grad_v, [1, 2]).reshape([C, 1, k, k])
        return grad_x, grad_w


def _dw_fft(x, weight):
    return _FFTCorrelation.apply(x, weight)


_FORMULATIONS = {"plain": _dw_plain, "toeplitz": _dw_toeplitz, "rows": _dw_rows, "fft": _dw_fft}


# below this many multiply-adds (B*C*H*W*k*k) Paddle's kernel is as fast as any formulation: the others cost
# a few ms of fixed overhead (measured with ``bench_train_speed.py --quick``), and tests run at such sizes
_MIN_MACS = 1 << 20


def _select_formulation(h, w, k, maps=None):
    """The formulation measured fastest (forward + backward) on CPU for ``maps`` (batch x channels) h x w maps
    and a k x k kernel (``maps=None``: ignore the size of the batch).

    Measured with ``benchmarks/bench_train_speed.py --layer-sweep`` (2 cores, OMP_NUM_THREADS=2, Paddle 3.3,
    the families' channel counts and training batches; forward + backward ms of one sweep on a shared
    machine, so +-30%; "plain" is Paddle's kernel):

    ========================  ======  ========  ======  ======
    kernel, map, C, B          plain  toeplitz    rows     fft
    ========================  ======  ========  ======  ======
    11, 32x32, 64, 32           2681         -     769     460
    11, 16x16, 128, 32          2290       360     281     348
    11,  8x8, 256, 32           1910        59     104     213
    11,  4x4, 512, 32            520        13      66     244
     5, 16x16, 256, 64           969       717     666     983
     3, 32x32, 128, 32           427         -     483    1007
     3, 16x16, 256, 32           209       489     138     401
     3,  8x8, 512, 32            227        71      77     240
     3,  4x4, 1024, 32           359        25      55     192
    ========================  ======  ========  ======  ======

    The matrix product wins while the map is small (H*W <= 64: the kernel covers most of it); beyond that the
    FFT for large kernels (its cost does not grow with k), the banded rows for small kernels on maps up to
    16 wide (their cost grows with W), and Paddle's own kernel for small kernels on larger maps.
    """
    if maps is not None and maps * h * w * k * k < _MIN_MACS:
        return "plain"
    if h * w <= 64:
        return "toeplitz"
    if k >= 7:
        return "fft"
    return "rows" if w <= 16 else "plain"


class _PointwiseConv(paddle.autograd.PyLayer):
    """A 1x1 convolution (stride 1, no padding, one group) as the matmul it is: y_b = W [Cout, Cin] @ x_b [Cin, HW]
    for each sample b (one batched matmul, no data movement). Backward: dx_b = W^T @ g_b, and
    dW = sum_b g_b @ x_b^T, as a batched matmul summed over the batch when the maps are at least as large as the
    smaller channel count (the [B, Cout, Cin] partial products are then no larger than the activations), else
    as one [Cout, B*HW] @ [B*HW, Cin] matmul over channel-major copies (cheap for small maps)."""

    @staticmethod
    def forward(ctx, x, weight):
        B, C, H, W = x.shape
        w = weight.reshape(weight.shape[:2])
        ctx.save_for_backward(x, weight)
        ctx.needs = (not x.stop_gradient, not weight.stop_gradient)  # PyLayer wants None for the others
        return _C_ops.matmul(w, x.reshape([B, C, H * W]), False, False).reshape([B, w.shape[0], H, W])

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensor()
        B, C, H, W = x.shape
        cout = weight.shape[0]
        w = weight.reshape([cout, C])
        g3, x3 = grad.reshape([B, cout, H * W]), x.reshape([B, C, H * W])
        grad_x = _C_ops.matmul(w, g3, True, False).reshape([B, C, H, W]) if ctx.needs[0] else None
        if not ctx.needs[1]:
            return grad_x, None
        if H * W >= min(cout, C):
            grad_w = _C_ops.matmul(g3, x3, False, True).sum(0)
        else:
            grad_w = _C_ops.matmul(g3.transpose([1, 0, 2]).reshape([cout, B * H * W]),
                                   x3.transpose([1, 0, 2]).reshape([C, B * H * W]), False, True)
        return grad_x, grad_w.reshape(weight.shape)


class Conv2D(nn.Conv2D):
    """``nn.Conv2D`` (same arguments, parameters and state_dict keys) whose bias is added as [B, C, H*W] + [C, 1]
    rather than nn.Conv2D's [B, C, H, W] + [1, C, 1, 1]: the same additions, but Paddle's CPU kernel takes its
    fast path for the first layout and a general broadcast loop (~15x slower, measured) for the second, which
    made the bias add of the 1x1 convs ~15% of a Conv2Former training step. In dygraph on CPU (float32), a 1x1
    conv (stride 1, no padding, one group) is computed as the matmul it is (``_PointwiseConv``: Paddle's conv
    kernel and its backward are slower for it). Only NCHW dygraph takes these paths; static graphs (export)
    keep nn.Conv2D's ops, and ``depthwise_formulation("reference")`` turns both off."""

    def _add_bias(self, y):
        if self.bias is None:
            return y
        B, C, H, W = y.shape
        return (y.reshape([B, C, H * W]) + self.bias.reshape([C, 1])).reshape([B, C, H, W])

    def _is_pointwise(self):
        """A 1x1 conv with stride 1, dilation 1, one group and no padding: a matmul per sample."""
        return (list(self._kernel_size) == [1, 1] and list(self._stride) == [1, 1] and list(self._dilation) == [1, 1]
                and self._groups == 1 and all(int(q) == 0 for q in self._updated_padding))

    def forward(self, x):
        if (not paddle.in_dynamic_mode() or self._data_format != "NCHW" or self._padding_mode != "zeros"
                or getattr(_force, "name", None) == "reference"):
            return nn.Conv2D.forward(self, x)  # explicit: to_static's rewrite breaks super()
        if self._is_pointwise() and x.dtype == paddle.float32 and x.place.is_cpu_place():
            return self._add_bias(_PointwiseConv.apply(x, self.weight))
        if self.bias is None:
            return nn.Conv2D.forward(self, x)
        return self._add_bias(F.conv2d(x, self.weight, None, self._stride, self._padding, self._dilation,
                                       self._groups))


class DepthwiseConv2D(Conv2D):
    """``nn.Conv2D(in_channels, out_channels, kernel_size, ..., groups=in_channels)`` with the same arguments,
    parameters (``weight`` [C, 1, k, k], ``bias`` [C]) and state_dict keys, so checkpoints load unchanged.

    Input and output [B, C, H, W]. In dygraph on CPU, for stride 1, dilation 1, an odd square kernel, 'same'
    zero padding (``padding=k//2`` or ``"same"``), NCHW float32, the correlation is computed by the formulation
    ``_select_formulation`` picks for the shape; in static graphs (exported programs) it is Paddle's depthwise
    op with the kernel cropped to the taps that can reach the map (``_static_forward``: the same sum);
    everything else (GPU dygraph, other configurations) is exactly ``nn.Conv2D``. All formulations are the same
    math as Paddle's op (outputs and gradients agree to float32 rounding, tested in tests/test_dwconv.py);
    ``depthwise_formulation`` forces one. Raises ValueError unless ``groups == in_channels == out_channels``.
    ``separate_bias_in_export=True``: exported programs add the bias after the conv (faster in the bf16
    predictor where no activation follows the conv; see ``_static_forward``). It applies where the static path
    does (stride 1, odd square kernel, 'same' zero padding, NCHW) and is ignored otherwise.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=None,
                 separate_bias_in_export=False, **kwargs):
        groups = in_channels if groups is None else groups
        if not (groups == in_channels == out_channels):
            raise ValueError(f"DepthwiseConv2D needs groups == in_channels == out_channels, got groups={groups}, "
                             f"in_channels={in_channels}, out_channels={out_channels}; use nn.Conv2D otherwise")
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, **kwargs)
        self.separate_bias_in_export = bool(separate_bias_in_export)
        self._fast_ok = self._same_padding_odd_kernel()

    def _same_padding_odd_kernel(self):
        kh, kw = self._kernel_size
        if kh != kw or kh % 2 == 0 or list(self._stride) != [1, 1] or list(self._dilation) != [1, 1]:
            return False
        if self._padding_mode != "zeros" or self._data_format != "NCHW":
            return False
        if self._padding_algorithm == "SAME":
            return True
        pads = list(self._updated_padding)
        return self._padding_algorithm == "EXPLICIT" and len(pads) in (2, 4) and all(q == kh // 2 for q in pads)

    def forward(self, x):
        name = getattr(_force, "name", None)
        if name != "reference" and self._fast_ok and not paddle.in_dynamic_mode():
            return self._static_forward(x)
        if (name == "reference" or not self._fast_ok or not paddle.in_dynamic_mode()
                or x.dtype != paddle.float32 or not x.place.is_cpu_place()):
            return Conv2D.forward(self, x)
        B, C, H, W = x.shape
        name = name or _select_formulation(H, W, self._kernel_size[0], B * C)
        return self._add_bias(_FORMULATIONS[name](x, self.weight))

    def _static_forward(self, x):
        """The static-graph (export) op: Paddle's depthwise conv with the kernel cropped to the taps that can
        reach an H x W map. With 'same' padding, output o reads input o + t - k//2 through tap t, so only the
        central min(k, 2H - 1) rows (and 2W - 1 columns) of taps ever meet the map; the others always multiply
        zero padding. Dropping them is the same sum, and it matters: oneDNN's bf16 depthwise kernel refuses a
        padding of k//2 >= the map (Conv2Former's 11x11 kernel on its 4x4 last stage) and falls back to an
        im2col GEMM ~100x slower (measured: a quarter of the whole bf16 forward). Sizes unknown at trace time
        (-1) keep the full kernel.

        With ``separate_bias_in_export`` the bias is added after the conv, written ``bias + conv(x)``: oneDNN's
        faster bf16 depthwise kernel (brdgmm) takes no fp32 bias and Paddle always passes one, so a conv with a
        bias runs the older jit_dw kernel; Paddle Inference's conv2d_bias_fuse_pass folds ``conv(x) + bias``
        back into the conv, but not the bias as the first operand. Measured (bf16 predictor, 2 cores): Conv2Former's
        11x11 modulation convs, which no activation follows, 1.13x the whole forward; where an activation follows
        (ConvMixer's 7x7 + ReLU, Conv2Former's 3x3 + GELU) it no longer fuses into the conv and the forward was
        0.89-0.94x, so those keep the fused bias. Same sum; float32 results agree to rounding
        (tests/test_dwconv.py)."""
        k = self._kernel_size[0]
        h, w = int(x.shape[2]), int(x.shape[3])
        kh = k if h <= 0 else min(k, 2 * h - 1)
        kw = k if w <= 0 else min(k, 2 * w - 1)
        separate = self.bias is not None and self.separate_bias_in_export
        if (kh, kw) == (k, k) and not separate:
            return Conv2D.forward(self, x)
        top, left = (k - kh) // 2, (k - kw) // 2
        weight = self.weight if (kh, kw) == (k, k) else self.weight[:, :, top:top + kh, left:left + kw]
        y = F.conv2d(x, weight, None if separate else self.bias, 1, [kh // 2, kw // 2], 1, self._groups)
        return self.bias.reshape([1, -1, 1, 1]) + y if separate else y


class BatchNorm2D(nn.BatchNorm2D):
    """``nn.BatchNorm2D`` (same arguments, parameters ``weight``/``bias``/``_mean``/``_variance`` and
    state_dict keys), whose inference in static graphs (exported programs) is the same per-channel affine
    written as a 1x1 depthwise conv: weight ``w / sqrt(var + eps)`` [C, 1, 1, 1], bias ``b - mean * scale``.

    Input and output [B, C, H, W] (NCHW). Dygraph, training and other data formats are ``nn.BatchNorm2D``.
    Why: in Paddle 3.3's bf16 oneDNN predictor, batch_norm runs in fp32 with a reorder from and to bf16 around
    it; where a BatchNorm follows an activation (ConvMixer's conv -> GELU -> BN) no fuse pass folds it into a
    conv, and those BNs and their reorders were half of convmixer_256_8's bf16 forward. A depthwise conv stays
    in bf16, and a following residual add fuses into it as a oneDNN post-op (measured: 325 -> ~700 images/s,
    batch 64, 2 cores). The fp32 maths is the same to rounding (tests/test_convmixer_export.py).
    """

    def forward(self, x):
        if (paddle.in_dynamic_mode() or self.training or self._data_format != "NCHW"
                or getattr(self, "_use_global_stats", None) is False):
            return nn.BatchNorm2D.forward(self, x)  # explicit: to_static's rewrite breaks super()
        scale = paddle.rsqrt(self._variance + self._epsilon)
        if self.weight is not None:
            scale = scale * self.weight
        shift = -self._mean * scale
        if self.bias is not None:
            shift = shift + self.bias
        c = scale.shape[0]
        return F.conv2d(x, scale.reshape([c, 1, 1, 1]), shift, groups=c)
