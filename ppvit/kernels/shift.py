"""A leading-axis slice whose backward is a zero pad (DilateFormer's shifted key/value windows)."""
import paddle
import paddle.nn.functional as F

from .config import active


class _Shift(paddle.autograd.PyLayer):
    """``t[o:o + n]`` along axis 0 whose backward is a zero-pad.

    The forward is the same view as slicing; Paddle's own slice backward is many times slower on CPU than a
    pad, and ``split`` (fast backward) materialises a copy per call, i.e. the Unfold memory again.
    """

    @staticmethod
    def forward(ctx, t, o, n):
        ctx.pads = (o, t.shape[0] - o - n)
        return t[o:o + n]

    @staticmethod
    def backward(ctx, grad):
        before, after = ctx.pads
        g = grad.reshape([1, grad.shape[0], -1])  # 1, n, rest: pad the leading axis as a sequence
        g = F.pad(g, [before, after], data_format="NLC")
        return g.reshape([before + grad.shape[0] + after] + list(grad.shape[1:]))


@paddle.jit.not_to_static
def leading_slice(t, o, n):
    """``t[o:o + n]`` (rows o .. o+n-1 of the leading axis). In dygraph with the kernels on and a gradient to
    propagate, its backward is a zero pad (``_Shift``); otherwise (no gradient, kernels off, a static graph) it
    is a plain slice."""
    if active() and not t.stop_gradient:
        return _Shift.apply(t, o, n)
    return t[o:o + n]
