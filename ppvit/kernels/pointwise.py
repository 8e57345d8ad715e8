"""1x1 convolutions as the matmuls they are, and a conv's bias added in the layout Paddle's CPU kernel is fast
for (dygraph)."""
import paddle
import paddle.nn.functional as F
from paddle import _C_ops  # matmul by the op, not paddle.matmul: FlopCounter patches that

from .config import active, on_cpu_float32
from .normact import add_channel_bias


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


def add_bias(conv, y):
    """``y + conv.bias`` per channel, as [B, C, H*W] + [C, 1] rather than nn.Conv2D's [B, C, H, W] + [1, C, 1, 1]:
    the same additions, but Paddle's CPU kernel takes its fast path for the first layout and a general broadcast
    loop (~15x slower, measured) for the second, which made the bias add of the 1x1 convs ~15% of a Conv2Former
    training step. When a gradient is wanted (training), ``normact.add_channel_bias`` adds it instead: Paddle's
    backward of either layout copies the gradient and reduces the bias's in a scalar loop. y: [B, C, H, W]."""
    if conv.bias is None:
        return y
    z = add_channel_bias(y, conv.bias)  # in training: the C loop, whose backward is one reduction
    if z is not None:
        return z
    B, C, H, W = y.shape
    return (y.reshape([B, C, H * W]) + conv.bias.reshape([C, 1])).reshape([B, C, H, W])


def is_pointwise(conv):
    """A 1x1 conv with stride 1, dilation 1, one group and no padding: a matmul per sample."""
    return (list(conv._kernel_size) == [1, 1] and list(conv._stride) == [1, 1] and list(conv._dilation) == [1, 1]
            and conv._groups == 1 and all(int(q) == 0 for q in conv._updated_padding))


@paddle.jit.not_to_static
def conv2d(conv, x):
    """``conv(x)`` for an ``nn.Conv2D`` in NCHW with zero padding, in dygraph with the kernels on: a 1x1 conv on
    float32 CPU tensors as a matmul (``_PointwiseConv``: Paddle's conv kernel and its backward are slower for it),
    any other conv with a bias as Paddle's conv plus ``add_bias``. None otherwise (switched off, a static graph,
    another layout or padding mode, no bias to move), and the caller runs ``nn.Conv2D.forward``.
    x: [B, C_in, H, W] -> [B, C_out, H', W']."""
    if not active() or conv._data_format != "NCHW" or conv._padding_mode != "zeros":
        return None
    if is_pointwise(conv) and on_cpu_float32(x):
        return add_bias(conv, _PointwiseConv.apply(x, conv.weight))
    if conv.bias is None:
        return None
    return add_bias(conv, F.conv2d(x, conv.weight, None, conv._stride, conv._padding, conv._dilation, conv._groups))
