"""DilateFormer's sliding-window dilated attention by ppvit's C loop (dygraph, CPU float32).

In Paddle's ops the attention is k*k shifted products and sums per query (``models.dilateformer
.dilate_attention``): some 40 small elementwise ops per dilation and block, each a scalar loop on CPU, forward
and backward. The C loop computes the scores, the softmax and the weighted sum in one pass per query and keeps
the softmax weights for the backward.
"""
import paddle

from . import native
from .config import active, on_cpu_float32
from .strided import contiguous

MAX_WINDOW = 64  # kernel_size ** 2 the C loop holds on its stack


class _DilatedAttention(paddle.autograd.PyLayer):
    @staticmethod
    def forward(ctx, q, k, v, head_dim, dilation, kernel_size, scale):
        H, W, B, d = q.shape
        bh = B * (d // head_dim)
        q, k, v = (contiguous(t) for t in (q, k, v))  # [H, W, B, d] = [H*W, B*heads, head_dim]
        out = paddle.empty_like(q)
        attn = paddle.empty([H * W, bh, kernel_size * kernel_size], dtype="float32")
        native.call("ppvit_dilate_fwd", q, k, v, out, attn, H, W, bh, head_dim, kernel_size, dilation, scale)
        ctx.save_for_backward(q, k, v, attn)
        ctx.geometry = (H, W, bh, head_dim, kernel_size, dilation, scale)
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, attn = ctx.saved_tensor()
        grad = contiguous(grad)
        dq, dk, dv = paddle.empty_like(q), paddle.empty_like(k), paddle.empty_like(v)
        native.call("ppvit_dilate_bwd", q, k, v, attn, grad, dq, dk, dv, *ctx.geometry)
        return dq, dk, dv


@paddle.jit.not_to_static
def dilated_attention(q, k, v, head_dim, dilation, kernel_size, scale, attn_drop=None, pad=None):
    """``models.dilateformer.dilate_attention`` (q, k, v: [H, W, B, heads * head_dim] -> [H, W, B, heads *
    head_dim]) by the C loop, or None where it does not apply (an active attention dropout, a padding function
    given (exports), kernels off, a static graph, not CPU float32, no C library, a window over ``MAX_WINDOW``
    keys)."""
    if pad is not None or (attn_drop is not None and attn_drop.training and attn_drop.p > 0):
        return None
    if not (active() and all(on_cpu_float32(t) for t in (q, k, v)) and q.size > 0 and kernel_size % 2 == 1
            and kernel_size * kernel_size <= MAX_WINDOW and q.shape == k.shape == v.shape and q.ndim == 4
            and q.shape[-1] % head_dim == 0 and native.library() is not None):
        return None
    return _DilatedAttention.apply(q, k, v, int(head_dim), int(dilation), int(kernel_size), float(scale))
