"""Transposes made contiguous by one C loop (dygraph, CPU float32): ``permute`` and ``contiguous``.

In dygraph, Paddle's ``transpose`` returns a strided view, and the op that needs it contiguous (a reshape, a
matmul, a backward) copies it with a generic strided kernel that costs ~60x a plain copy here (an [8, 4, 197,
48] transpose + reshape: 5.2 ms, against 0.09 ms for numpy's copy; measured on the 2-core AMD EPYC). Attention's
head split and merge are such transposes, forward and backward, in every block of ConViT, CoAtNet and
DilateFormer. ``native``'s ``ppvit_strided_copy`` makes the copy at memory speed (whole rows, or 32 x 32 tiles
when the last two axes swap), so ``permute`` returns the transposed tensor contiguous, and its backward is the
inverse permutation, also contiguous. The values are moved, never computed: the result equals Paddle's
``transpose`` bit for bit.
"""
import numpy as np
import paddle

from . import native
from .config import active, on_cpu_float32

__all__ = ["contiguous", "permute"]


def _merged(shape, strides):
    """(shape, strides) of the same view with size-1 axes dropped and neighbours that are contiguous together
    merged (a [B, N, H, D] -> [B, H, N, D] transpose stays 4-d, a plain reshape becomes 1-d)."""
    dims = [(n, s) for n, s in zip(shape, strides) if n != 1]
    out = []
    for n, s in dims:
        if out and out[-1][1] == s * n:
            out[-1] = (out[-1][0] * n, s)
        else:
            out.append((n, s))
    return [n for n, _ in out] or [1], [s for _, s in out] or [1]


def _copy(t, shape, strides):
    """A new contiguous float32 tensor of ``shape`` holding t's values at element ``strides`` from t's first
    element (its ``data_ptr``, which includes the view's offset)."""
    out = paddle.empty(shape, dtype="float32")
    if out.size == 0:
        return out
    m_shape, m_strides = _merged(shape, strides)
    native.call("ppvit_strided_copy", t, out, len(m_shape), np.asarray(m_shape, dtype=np.int64),
                np.asarray(m_strides, dtype=np.int64))
    return out


def _usable(x):
    return active() and on_cpu_float32(x) and native.library() is not None


def contiguous(t):
    """``t.contiguous()`` (any strided view: a transpose, a slice, an unbind's part), by the C copy for a CPU
    float32 tensor in dygraph, Paddle's otherwise. Not recorded by autograd (for the kernels' forwards and
    backwards, which run outside it); the copy keeps t's ``stop_gradient``."""
    if t.is_contiguous():
        return t
    if not _usable(t):
        return t.contiguous()
    out = _copy(t, list(t.shape), list(t.strides))
    out.stop_gradient = t.stop_gradient  # as Paddle's: the PyLayers read it to know which gradients to return
    return out


def _permuted(t, perm):
    return _copy(t, [t.shape[p] for p in perm], [t.strides[p] for p in perm])


class _Permute(paddle.autograd.PyLayer):
    @staticmethod
    def forward(ctx, x, perm):
        ctx.inverse = [int(i) for i in np.argsort(perm)]
        return _permuted(x, perm)

    @staticmethod
    def backward(ctx, grad):
        return _permuted(grad, ctx.inverse)


@paddle.jit.not_to_static
def permute(x, perm):
    """``x.transpose(perm)`` as a contiguous tensor (forward, and its gradient in backward), in dygraph on a CPU
    float32 tensor (contiguous or a strided view); None wherever the kernels do not apply (the caller then runs
    ``x.transpose(perm)``). ``perm``: a permutation of ``range(x.ndim)``; raises ValueError otherwise."""
    perm = [int(p) for p in perm]
    if sorted(perm) != list(range(x.ndim)):
        raise ValueError(f"perm {perm} is not a permutation of the {x.ndim} axes of a {list(x.shape)} tensor")
    if not _usable(x):
        return None
    if paddle.is_grad_enabled() and not x.stop_gradient:
        return _Permute.apply(x, perm)
    return _permuted(x, perm)
