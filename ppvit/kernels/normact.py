"""GELU, LayerNorm, BatchNorm (training), ConViT's per-head mix and a per-channel scale by ppvit's C kernels, and
Linear with its bias gradient as a matrix product (dygraph, CPU float32).

Paddle's CPU kernels for these are scalar loops: on a 1576 x 768 activation (ConViT-Ti's MLP at batch 8) its
GELU forward + backward, LayerNorm forward + backward and bias add + backward take several times PyTorch's time,
and they sum to a large share of a training step in every family. Every buffer a C loop writes is float32 (the
inputs are checked to be, and the statistics are allocated so whatever Paddle's default dtype). ``native``
builds the C loops; the functions here return None (the caller then runs Paddle's op) wherever they do not
apply: kernels off, a static graph, not CPU float32, or no C library on this machine.
"""
import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import _C_ops

from . import native
from .native import call as _call
from .config import active, on_cpu_float32
from .strided import contiguous as _contiguous


def _usable(x):
    return active() and on_cpu_float32(x) and x.size > 0 and native.library() is not None


def _wants_grad(*tensors):
    """Autograd will record this op: grad mode is on and some input needs a gradient."""
    return paddle.is_grad_enabled() and any(t is not None and not t.stop_gradient for t in tensors)


def _needs(*tensors):
    """Per input: whether backward must return its gradient (PyLayer wants None for the others)."""
    return tuple(t is not None and not t.stop_gradient for t in tensors)


# ---------------------------------------------------------------------------------------------------------- GELU
def _gelu_fwd(x):
    y = paddle.empty_like(x)
    _call("ppvit_gelu_fwd", x, y, x.size)
    return y


class _GELU(paddle.autograd.PyLayer):
    @staticmethod
    def forward(ctx, x):
        x = _contiguous(x)
        ctx.save_for_backward(x)
        return _gelu_fwd(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensor()
        grad = _contiguous(grad)
        dx = paddle.empty_like(x)
        _call("ppvit_gelu_bwd", x, grad, dx, x.size)
        return dx


@paddle.jit.not_to_static
def gelu(x):
    """The exact (erf) GELU of x (any shape) by the C kernel, or None where it does not apply."""
    if not _usable(x):
        return None
    return _GELU.apply(x) if _wants_grad(x) else _gelu_fwd(_contiguous(x))


# ----------------------------------------------------------------------------------------------------- LayerNorm
def _work(*sizes):
    """Scratch memory for a C call (pass the array itself to ``_call``)."""
    return np.empty(int(np.prod(sizes)), dtype=np.float32)


def _ln_forward(x, weight, bias, eps, channels_first):
    """(y, mean, rstd) of a contiguous x; mean/rstd per normalised vector."""
    y = paddle.empty_like(x)
    if channels_first:
        B, C, S = x.shape[0], x.shape[1], x.size // (x.shape[0] * x.shape[1])
        mean, rstd = paddle.empty([B * S], dtype="float32"), paddle.empty([B * S], dtype="float32")
        n = _call("ppvit_max_threads")
        work = _work(n, 2, S)
        _call("ppvit_ln_cf_fwd", x, weight, bias, y, mean, rstd, work, B, C, S, eps, n)
    else:
        C = x.shape[-1]
        rows = x.size // C
        mean, rstd = paddle.empty([rows], dtype="float32"), paddle.empty([rows], dtype="float32")
        _call("ppvit_ln_fwd", x, weight, bias, y, mean, rstd, rows, C, eps)
    return y, mean, rstd


class _LayerNorm(paddle.autograd.PyLayer):
    """LayerNorm over the last axis (rows x C) or over the channels of [B, C, S] (``channels_first``)."""

    @staticmethod
    def forward(ctx, x, weight, bias, eps, channels_first):
        x = _contiguous(x)
        y, mean, rstd = _ln_forward(x, weight, bias, eps, channels_first)
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.channels_first = channels_first
        ctx.needs = _needs(x, weight, bias)
        ctx.has = (weight is not None, bias is not None)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, mean, rstd = ctx.saved_tensor()
        grad = _contiguous(grad)
        dx = paddle.empty_like(x)
        C = x.shape[1] if ctx.channels_first else x.shape[-1]
        dw = paddle.empty([C], dtype="float32") if ctx.has[0] else None
        db = paddle.empty([C], dtype="float32") if ctx.has[1] else None
        n = _call("ppvit_max_threads")
        if ctx.channels_first:
            B, S = x.shape[0], x.size // (x.shape[0] * C)
            work = _work(n * 2 * S + n * 2 * C)
            _call("ppvit_ln_cf_bwd", x, grad, weight, mean, rstd, dx, dw, db, work, B, C, S, n)
        else:
            work = _work(n, 2, C)
            _call("ppvit_ln_bwd", x, grad, weight, mean, rstd, dx, dw, db, work, x.size // C, C, n)
        grads = [dx if ctx.needs[0] else None]
        if ctx.has[0]:
            grads.append(dw.reshape(weight.shape) if ctx.needs[1] else None)
        if ctx.has[1]:
            grads.append(db if ctx.needs[2] else None)
        return tuple(grads)


@paddle.jit.not_to_static
def layer_norm(x, weight, bias, eps, channels_first=False):
    """LayerNorm of x over its last axis (``nn.LayerNorm(C)``; weight/bias [C] or None), or with
    ``channels_first`` over axis 1 of [B, C, H, W] (``LayerNorm2d``), by the C kernel; None where it does not
    apply. The variance is that of the centred values; ``eps`` is added to it."""
    if not _usable(x) or x.ndim < (3 if channels_first else 1):
        return None
    for p in (weight, bias):
        if p is not None and not on_cpu_float32(p):
            return None
    if not _wants_grad(x, weight, bias):
        return _ln_forward(_contiguous(x), weight, bias, float(eps), bool(channels_first))[0]
    return _LayerNorm.apply(x, weight, bias, float(eps), bool(channels_first))


# -------------------------------------------------------------------------------------------------------- Linear
class _Linear(paddle.autograd.PyLayer):
    """y = x @ W + b over the last axis of x. Backward: dx = g @ W^T, dW = x^T @ g and db = 1^T @ g, the bias
    gradient as a matrix-vector product (Paddle's broadcast-add backward reduces it in a scalar loop)."""

    @staticmethod
    def forward(ctx, x, weight, bias=None):
        shape = x.shape
        x2 = x.reshape([-1, shape[-1]])
        y = F.linear(x2, weight, bias)  # Paddle's forward (and what ppvit's FLOP counter sees)
        ctx.save_for_backward(x2, weight)
        ctx.shape = shape
        ctx.needs = _needs(x, weight, bias)
        ctx.has_bias = bias is not None
        return y.reshape(shape[:-1] + [weight.shape[1]])

    @staticmethod
    def backward(ctx, grad):
        x2, weight = ctx.saved_tensor()
        g2 = _contiguous(grad).reshape([-1, weight.shape[1]])
        dx = _C_ops.matmul(g2, weight, False, True).reshape(ctx.shape) if ctx.needs[0] else None
        dw = _C_ops.matmul(x2, g2, True, False) if ctx.needs[1] else None
        if not ctx.has_bias:
            return dx, dw
        db = None
        if ctx.needs[2]:
            db = _C_ops.matmul(paddle.ones([1, g2.shape[0]], g2.dtype), g2, False, False).reshape([weight.shape[1]])
        return dx, dw, db


@paddle.jit.not_to_static
def linear(x, weight, bias=None):
    """``F.linear(x, weight, bias)`` (x [..., in], weight [in, out], bias [out] or None) with a matrix-product
    bias gradient, in dygraph on CPU float32 when a gradient is wanted; None otherwise."""
    if not active() or not on_cpu_float32(x) or x.ndim < 2:
        return None
    if not _wants_grad(x, weight, bias):
        return None  # no backward to speed up: Paddle's op
    return _Linear.apply(x, weight, bias)


# ----------------------------------------------------------------------------------------------- per-head mix
class _MixHeads(paddle.autograd.PyLayer):
    @staticmethod
    def forward(ctx, a, q, w):
        a, q = _contiguous(a), _contiguous(q)
        B, H = a.shape[0], a.shape[1]
        L = a.size // (B * H)
        out = paddle.empty_like(a)
        _call("ppvit_mix_fwd", a, q, w, out, B, H, L, int(q.shape[0] == B))
        ctx.save_for_backward(a, q, w)
        ctx.needs = _needs(a, q, w)
        return out

    @staticmethod
    def backward(ctx, grad):
        a, q, w = ctx.saved_tensor()
        grad = _contiguous(grad)
        B, H = a.shape[0], a.shape[1]
        L = a.size // (B * H)
        da = paddle.empty_like(a) if ctx.needs[0] else None
        dq = paddle.empty_like(q) if ctx.needs[1] else None
        dw = paddle.empty_like(w) if ctx.needs[2] else None
        work = _work(B, H)
        _call("ppvit_mix_bwd", grad, a, q, w, da, dq, dw, work, B, H, L, int(q.shape[0] == B))
        return da, dq, dw


@paddle.jit.not_to_static
def mix_heads(a, q, w):
    """``(1 - w) * a + w * q`` with one weight per head: a [B, H, ...], q [B, H, ...] or [1, H, ...] (shared by the
    batch), w [H]. ConViT's gated attention mixes its content and positional scores so; Paddle's broadcast
    multiply and its backward (a reduction over the batch for q's and w's gradients) are scalar loops on CPU.
    The kernel runs in dygraph on CPU float32; elsewhere Paddle's ops compute the same expression."""
    B, H = a.shape[0], a.shape[1]
    if (_usable(a) and a.ndim >= 2 and list(q.shape[1:]) == list(a.shape[1:]) and q.shape[0] in (1, B)
            and list(w.shape) == [H] and on_cpu_float32(q) and on_cpu_float32(w)):
        return _MixHeads.apply(a, q, w)
    w = w.reshape([1, H] + [1] * (a.ndim - 2))
    return (1.0 - w) * a + w * q


# ----------------------------------------------------------------------------------------- per-channel bias
class _AddBias(paddle.autograd.PyLayer):
    """y = x + bias per channel (x [B, C, ...], bias [C]); backward: dx = a copy of g, dbias = g summed over the
    batch and the positions in one pass (Paddle's broadcast-add backward reduces it in a scalar loop)."""

    @staticmethod
    def forward(ctx, x, bias):
        ctx.needs = _needs(x, bias)
        x = _contiguous(x)
        B, C = x.shape[0], x.shape[1]
        y = paddle.empty_like(x)
        _call("ppvit_bias_fwd", x, bias, y, B, C, x.size // (B * C))
        ctx.geometry = (B, C, x.size // (B * C))
        return y

    @staticmethod
    def backward(ctx, grad):
        g = _contiguous(grad)
        # dx is g's values in a tensor of its own: Paddle may add another branch's gradient into the first one it
        # receives for x, in place, and the upstream gradient (retain_grads, hooks) must not see that. The copy
        # is made in the same pass as the bias's sum.
        dx = paddle.empty_like(g) if ctx.needs[0] else None
        dbias = paddle.empty([ctx.geometry[1]], dtype="float32") if ctx.needs[1] else None
        if dx is not None or dbias is not None:
            _call("ppvit_bias_bwd", g, dx, dbias, *ctx.geometry)
        return dx, dbias


@paddle.jit.not_to_static
def add_channel_bias(x, bias):
    """``x + bias`` per channel for x [B, C, ...] and bias [C] by the C loop, forward and backward, in dygraph on
    CPU float32 when a gradient is wanted; None otherwise (the caller adds it with Paddle's ops)."""
    if (_usable(x) and x.ndim >= 2 and list(bias.shape) == [x.shape[1]] and on_cpu_float32(bias)
            and _wants_grad(x, bias)):
        return _AddBias.apply(x, bias)
    return None


# ---------------------------------------------------------------------------------------- per-channel scale
class _ScaleChannels(paddle.autograd.PyLayer):
    @staticmethod
    def forward(ctx, x, gamma):
        x = _contiguous(x)
        B, C = x.shape[0], x.shape[1]
        y = paddle.empty_like(x)
        _call("ppvit_chscale_fwd", x, gamma, y, B, C, x.size // (B * C))
        ctx.save_for_backward(x, gamma)
        ctx.needs = _needs(x, gamma)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, gamma = ctx.saved_tensor()
        grad = _contiguous(grad)
        B, C = x.shape[0], x.shape[1]
        dx = paddle.empty_like(x) if ctx.needs[0] else None
        dgamma = paddle.empty_like(gamma) if ctx.needs[1] else None
        work = _work(B, C)
        _call("ppvit_chscale_bwd", grad, x, gamma, dx, dgamma, work, B, C, x.size // (B * C))
        return dx, dgamma


@paddle.jit.not_to_static
def scale_channels(x, gamma):
    """``gamma.reshape([1, C, 1, 1]) * x`` for x [B, C, H, W] and gamma [C] (a layer scale in NCHW). Paddle's
    broadcast multiply and the reduction in its backward are scalar loops on CPU; in dygraph on CPU float32 a C
    loop computes it, elsewhere Paddle's ops."""
    if _usable(x) and x.ndim == 4 and list(gamma.shape) == [x.shape[1]] and on_cpu_float32(gamma):
        if _wants_grad(x, gamma):
            return _ScaleChannels.apply(x, gamma)
    return gamma.reshape([1, -1, 1, 1]) * x


# -------------------------------------------------------------------------------------- BatchNorm (training)
class _BatchNorm(paddle.autograd.PyLayer):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        x = _contiguous(x)
        B, C = x.shape[0], x.shape[1]
        y = paddle.empty_like(x)
        mean, var, invstd = (paddle.empty([C], dtype="float32") for _ in range(3))
        _call("ppvit_bn_fwd", x, weight, bias, y, mean, var, invstd, B, C, x.size // (B * C), eps)
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.needs = _needs(x, weight, bias)
        ctx.has = (weight is not None, bias is not None)
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, grad, *_statistics_grads):  # the statistics are not differentiable
        x, weight, mean, invstd = ctx.saved_tensor()
        grad = _contiguous(grad)
        B, C = x.shape[0], x.shape[1]
        dx = paddle.empty_like(x) if ctx.needs[0] else None
        dw = paddle.empty([C], dtype="float32") if ctx.has[0] and ctx.needs[1] else None
        db = paddle.empty([C], dtype="float32") if ctx.has[1] and ctx.needs[2] else None
        _call("ppvit_bn_bwd", grad, x, weight, mean, invstd, dx, dw, db, B, C, x.size // (B * C))
        grads = [dx]
        if ctx.has[0]:
            grads.append(dw)
        if ctx.has[1]:
            grads.append(db)
        return tuple(grads)


@paddle.jit.not_to_static
def batch_norm(bn, x):
    """``bn(x)`` for an ``nn.BatchNorm2D`` in training mode (batch statistics; NCHW) by ppvit's C loop, with its
    running mean and variance updated as Paddle does (``momentum * running + (1 - momentum) * batch``, the
    batch variance biased). None where it does not apply (eval mode or global statistics, kernels off, a static
    graph, not CPU float32, NHWC, no gradient recorded), and the caller runs Paddle's op. x: [B, C, H, W]."""
    if (not bn.training or bn._use_global_stats or bn._data_format != "NCHW" or x.ndim != 4 or not _usable(x)
            or not _wants_grad(x, bn.weight, bn.bias)
            or any(p is not None and not on_cpu_float32(p) for p in (bn.weight, bn.bias, bn._mean, bn._variance))):
        return None
    y, mean, var = _BatchNorm.apply(x, bn.weight, bn.bias, float(bn._epsilon))
    with paddle.no_grad():
        m = float(bn._momentum)
        bn._mean.set_value(bn._mean * m + mean * (1.0 - m))
        bn._variance.set_value(bn._variance * m + var * (1.0 - m))
    return y
