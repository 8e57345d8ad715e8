"""Depthwise convolution (``nn.Conv2D(C, C, k, groups=C)``, 'same' padding, stride 1) computed faster on CPU in
dygraph: the same correlation by whichever exact formulation measured fastest for the shape."""
import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import _C_ops  # matmul by the op, not paddle.matmul: FlopCounter patches that

from . import native
from .config import active, forced_formulation, on_cpu_float32
from .pointwise import add_bias
from .strided import contiguous

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
# Each has an exact gradient (hand-written backwards for the three matrix/FFT forms). Static graphs
# (paddle.jit.to_static / paddle.jit.save), GPUs and every configuration other than stride 1, dilation 1, an odd
# square kernel with 'same' zero padding, NCHW and float32 always use Paddle's kernel, so exported programs keep
# the plain depthwise_conv2d op (oneDNN runs it fast in the predictor; ppvit.deploy.rewrites crops a kernel
# larger than twice the map to the taps that reach it).


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


class _DirectCorrelation(paddle.autograd.PyLayer):
    """The correlation computed directly by ppvit's C loop (``native``): row loops along the width, planes across
    threads. Backward: the gradient correlated with the 180-degree-rotated kernel (the same loop), and the
    kernel's gradient as k*k dot products of shifted rows per channel."""

    @staticmethod
    def forward(ctx, x, weight):
        x = contiguous(x)
        B, C, H, W = x.shape
        k = weight.shape[-1]
        y = paddle.empty_like(x)
        native.call("ppvit_dw_fwd", x, weight, y, B * C, C, H, W, k, 0)
        ctx.save_for_backward(x, weight)
        ctx.needs = (not x.stop_gradient, not weight.stop_gradient)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensor()
        grad = contiguous(grad)
        B, C, H, W = x.shape
        k = weight.shape[-1]
        grad_x = grad_w = None
        if ctx.needs[0]:
            grad_x = paddle.empty_like(x)
            native.call("ppvit_dw_fwd", grad, weight, grad_x, B * C, C, H, W, k, 1)
        if ctx.needs[1]:
            grad_w = paddle.empty_like(weight)
            native.call("ppvit_dw_bwd_w", grad, x, grad_w, B, C, H, W, k)
        return grad_x, grad_w


def _dw_direct(x, weight):
    if native.library() is None:  # forced, but no C compiler here: what the rule picks without it
        return _FORMULATIONS[_select_formulation(*x.shape[2:], weight.shape[-1], direct=False)](x, weight)
    return _DirectCorrelation.apply(x, weight)


_FORMULATIONS = {"plain": _dw_plain, "toeplitz": _dw_toeplitz, "rows": _dw_rows, "fft": _dw_fft,
                 "direct": _dw_direct}


# below this many multiply-adds (B*C*H*W*k*k) Paddle's kernel is as fast as any formulation: the others cost
# a few ms of fixed overhead (measured with ``bench_train_speed.py --quick``), and tests run at such sizes
_MIN_MACS = 1 << 20


def _select_formulation(h, w, k, maps=None, direct=True):
    """The formulation measured fastest (forward + backward) on CPU for ``maps`` (batch x channels) h x w maps
    and a k x k kernel (``maps=None``: ignore the size of the batch; ``direct=False``: as if ppvit's C loop
    could not be built here).

    Measured with ``benchmarks/bench_train_speed.py --models --layer-sweep`` (2026-12-06, 2-core AMD EPYC,
    OMP_NUM_THREADS=2, Paddle 3.3; the families' channel counts and training batches; forward + backward ms,
    median of 3; "plain" is Paddle's kernel):

    ========================  ======  ========  ======  ======  ======
    kernel, map, C, B          plain  toeplitz    rows     fft  direct
    ========================  ======  ========  ======  ======  ======
    11, 32x32, 64, 32            774      1127     282     198     123
    11, 16x16, 128, 32           520        98     174     109      73
    11,  8x8, 256, 32            259        12      24      61      67
    11,  4x4, 512, 32            208         6      17      76      19
     7, 56x56, 64, 8             246      6472     154      66      38
     7, 14x14, 256, 8             70        91      15      23      16
     7,  7x7, 512, 8              50         9      10      19      14
     5, 16x16, 256, 64           467       233     287     328     131
     3, 56x56, 256, 8            272     42161     368     330      54
     3, 28x28, 384, 8            103      1930      63     101      30
     3, 14x14, 1024, 8            70       184      41     121      24
     3,  8x8, 512, 32            152        24      25     102      25
     3,  7x7, 2048, 8             92        23      23      74      23
    ========================  ======  ========  ======  ======  ======

    The matrix product wins while the map is small (H*W <= 64: the kernel covers most of it); beyond that the
    direct C loop (``native``). Without it: the FFT for large kernels (its cost does not grow with k), the banded
    rows for small kernels on maps up to 16 wide (their cost grows with W), and Paddle's own kernel for small
    kernels on larger maps.
    """
    if maps is not None and maps * h * w * k * k < _MIN_MACS:
        return "plain"
    if h * w <= 64:
        return "toeplitz"
    if direct and native.library() is not None:
        return "direct"
    if k >= 7:
        return "fft"
    return "rows" if w <= 16 else "plain"


def same_padding_odd_kernel(conv):
    """True for a conv whose geometry the formulations cover: an odd square kernel, stride 1, dilation 1, 'same'
    zero padding (``padding=k//2`` or ``"same"``), NCHW."""
    kh, kw = conv._kernel_size
    if kh != kw or kh % 2 == 0 or list(conv._stride) != [1, 1] or list(conv._dilation) != [1, 1]:
        return False
    if conv._padding_mode != "zeros" or conv._data_format != "NCHW":
        return False
    if conv._padding_algorithm == "SAME":
        return True
    pads = list(conv._updated_padding)
    return conv._padding_algorithm == "EXPLICIT" and len(pads) in (2, 4) and all(q == kh // 2 for q in pads)


@paddle.jit.not_to_static
def depthwise_conv2d(conv, x):
    """``conv(x)`` for a depthwise ``nn.Conv2D`` (groups == in == out channels) by the formulation
    ``_select_formulation`` picks (or ``depthwise_formulation`` forces), bias added in the fast layout; None where
    the kernels do not apply (switched off, a static graph, not float32 on CPU, another geometry: see
    ``same_padding_odd_kernel``), and the caller runs Paddle's op. x: [B, C, H, W] -> [B, C, H, W]."""
    if not active() or not on_cpu_float32(x) or not same_padding_odd_kernel(conv):
        return None
    B, C, H, W = x.shape
    name = forced_formulation() or _select_formulation(H, W, conv._kernel_size[0], B * C)
    return add_bias(conv, _FORMULATIONS[name](x, conv.weight))
