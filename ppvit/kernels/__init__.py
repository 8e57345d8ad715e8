"""ppvit's kernels: exact formulations of model layers that Paddle runs faster on CPU in dygraph (training and
dygraph inference), behind one switch.

- ``depthwise_conv2d``: a depthwise conv by a Toeplitz or banded matmul or by FFTs (``depthwise``);
- ``conv2d``: a 1x1 conv as a matmul, a conv's bias added in Paddle's fast broadcast layout (``pointwise``);
- ``leading_slice``: a slice whose backward is a pad (``shift``);
- ``gelu``, ``layer_norm``, ``batch_norm``, ``mix_heads``, ``scale_channels``: exact GELU, LayerNorm (last
  axis or channels first), BatchNorm in training, ConViT's per-head mix of two attention maps and a per-channel
  (layer) scale of NCHW maps, by C loops built on this machine at first use (``normact``, ``native``);
- ``linear``: a Linear whose bias gradient is a matrix product (``normact``);
- ``permute``: a transpose made contiguous by one C copy, forward and backward (attention's head split and
  merge; Paddle copies strided views with a slow generic kernel) (``strided``);
- ``dilated_attention``: DilateFormer's sliding-window attention, scores, softmax and weighted sum in one C loop
  (``attention``).

Each matches Paddle's own ops to float32 rounding, forward and gradients (tests/test_dwconv.py,
tests/test_kernels.py). The model layers (``ppvit.models.layers.Conv2D``/``DepthwiseConv2D``, DilateFormer's
attention) ask these functions, which return None (or the plain op) wherever they do not apply: switched off
(``set_enabled(False)``, ``use_kernels(False)``, ``PPVIT_KERNELS=0``), static graphs (export,
``paddle.jit.to_static``), devices and dtypes other than CPU float32. Exported programs hold Paddle's own ops;
their export-time rewrites are ``ppvit.deploy.rewrites``. See docs/kernels.md.
"""
from .attention import dilated_attention
from .config import (DEPTHWISE_FORMULATIONS, ENV_VAR, depthwise_formulation, is_enabled, set_enabled,
                     use_kernels)
from .depthwise import depthwise_conv2d
from .normact import batch_norm, gelu, layer_norm, linear, mix_heads, scale_channels
from .pointwise import conv2d
from .shift import leading_slice
from .strided import permute

__all__ = ["DEPTHWISE_FORMULATIONS", "ENV_VAR", "batch_norm", "conv2d", "depthwise_conv2d", "depthwise_formulation",
           "dilated_attention", "gelu", "is_enabled", "layer_norm", "leading_slice", "linear", "mix_heads",
           "permute", "scale_channels", "set_enabled", "use_kernels"]
