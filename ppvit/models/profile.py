"""Parameter and FLOP counting, the way papers report model cost.

``count_flops`` runs one forward pass and counts multiply-accumulates (MACs; papers and fvcore/timm call
them "FLOPs"): convolutions and Linear layers through layer hooks / ``F.linear``, and the functional
products that ``paddle.flops`` misses (``paddle.matmul``, ``@``, ``paddle.bmm``, ``paddle.mm``,
``paddle.einsum``: attention scores and attention-weighted values). Biases, activations, softmax, pooling
and elementwise ops are not counted; norm layers only with ``include_norm=True``.

A layer whose math is not a matmul in ppvit but is one in the paper (DilateFormer's sliding-window dilated
attention, computed here from shifted views and elementwise products) gets a rule in ``LAYER_RULES``: the
rule's count replaces whatever happens inside the layer.
"""
import contextlib
import functools
import math

import numpy as np
import paddle
import paddle.nn as nn
import paddle.nn.functional as F

from .layers import LayerNorm2d

__all__ = ["FlopCounter", "count_flops", "count_params", "matmul_macs", "einsum_macs", "LAYER_RULES"]


def count_params(model):
    """Number of parameters as papers and PyTorch count them: Paddle keeps BatchNorm running statistics
    as (non-trainable) parameters, and those are left out; other frozen parameters are counted."""
    stats = {id(t) for layer in model.sublayers(include_self=True)
             if isinstance(layer, nn.layer.norm._BatchNormBase) for t in (layer._mean, layer._variance)}
    return int(sum(int(np.prod(p.shape)) for p in model.parameters() if id(p) not in stats))


def _shape(t):
    return list(t.shape) if hasattr(t, "shape") else list(np.shape(t))


def matmul_macs(x_shape, y_shape, transpose_x=False, transpose_y=False):
    """MACs of ``paddle.matmul`` with numpy broadcasting of the batch dimensions."""
    x, y = list(x_shape), list(y_shape)
    if len(x) == 1:
        x, transpose_x = [1] + x, False  # a vector is one row
    if len(y) == 1:
        y, transpose_y = y + [1], False  # ... or one column
    m, k = (x[-1], x[-2]) if transpose_x else (x[-2], x[-1])
    n = y[-2] if transpose_y else y[-1]
    batch = np.broadcast_shapes(tuple(x[:-2]), tuple(y[:-2]))
    return int(np.prod(batch, dtype=np.int64)) * m * k * n


def einsum_macs(equation, *shapes):
    """Naive MACs of an einsum: (operands - 1) x the product of every index's size (a matmul for two)."""
    inputs = equation.replace(" ", "").split("->")[0].split(",")
    sizes = {}
    for spec, shape in zip(inputs, shapes):
        if "..." in spec:  # the ellipsis stands for the leading dims not named by letters
            n_ell = len(shape) - (len(spec) - 3)
            letters = spec.replace("...", "")
            for i, size in enumerate(shape[:n_ell]):
                sizes[f"...{i}"] = max(sizes.get(f"...{i}", 1), size)
            shape = shape[n_ell:]
            spec = letters
        for letter, size in zip(spec, shape):
            sizes[letter] = max(sizes.get(letter, 1), size)
    return max(len(shapes) - 1, 1) * int(np.prod(list(sizes.values()), dtype=np.int64))


def _conv_macs(layer, inputs, output):
    weight = layer.weight.shape  # forward conv: [C_out, C_in/groups, *k]; transposed: [C_in, C_out/groups, *k]
    per_position = int(np.prod(weight[1:]))
    if isinstance(layer, (nn.Conv1DTranspose, nn.Conv2DTranspose, nn.Conv3DTranspose)):
        return int(np.prod(_shape(inputs[0]))) * per_position  # every input pixel scatters a kernel
    return int(np.prod(_shape(output))) * per_position


def _dilate_attention_macs(layer, inputs, output):
    # the paper's formulation: per query and channel, k*k products for the scores and k*k for the values
    q = inputs[0]
    return 2 * int(np.prod(_shape(q))) * layer.kernel_size ** 2


def _layer_rules():
    rules = {}
    try:
        from .dilateformer import DilateAttention
    except ImportError:  # the family module is optional for the counter itself
        DilateAttention = None
    if DilateAttention is not None:
        rules[DilateAttention] = _dilate_attention_macs
    return rules


# class -> fn(layer, inputs, output) -> MACs, replacing whatever the layer computes inside
LAYER_RULES = _layer_rules()

_CONVS = (nn.Conv1D, nn.Conv2D, nn.Conv3D, nn.Conv1DTranspose, nn.Conv2DTranspose, nn.Conv3DTranspose)
_NORMS = (nn.layer.norm._BatchNormBase, nn.LayerNorm, nn.GroupNorm, LayerNorm2d)


class FlopCounter(contextlib.AbstractContextManager):
    """Counts MACs by category while active (``with FlopCounter(model) as c: model(x)``; then ``c.total``,
    ``c.by_kind``). ``layer_rules`` extends/overrides ``LAYER_RULES``."""

    def __init__(self, model, include_norm=False, layer_rules=None):
        self.model = model
        self.include_norm = include_norm
        self.rules = {**LAYER_RULES, **(layer_rules or {})}
        self.by_kind = {}
        self._handles = []
        self._patches = []
        self._suppress = 0  # > 0 inside a rule-counted layer
        self._in_op = 0  # > 0 inside a patched op (no double count if one calls another)

    @property
    def total(self):
        return sum(self.by_kind.values())

    def _add(self, kind, macs):
        if self._suppress == 0:
            self.by_kind[kind] = self.by_kind.get(kind, 0) + int(macs)

    # -- layer hooks --------------------------------------------------------------------------------------
    def _rule_for(self, layer):
        for cls in type(layer).__mro__:
            if cls in self.rules:
                return self.rules[cls]
        return None

    def _hook_layers(self):
        for layer in self.model.sublayers(include_self=True):
            rule = self._rule_for(layer)
            if rule is not None:
                self._handles.append(layer.register_forward_pre_hook(self._enter_rule))
                self._handles.append(layer.register_forward_post_hook(functools.partial(self._exit_rule, rule)))
            elif isinstance(layer, _CONVS):
                self._handles.append(layer.register_forward_post_hook(
                    lambda l, i, o: self._add("conv", _conv_macs(l, i, o))))
            elif self.include_norm and isinstance(layer, _NORMS):
                # the affine part, one multiply-add per element (a BatchNorm folds into the conv before it)
                self._handles.append(layer.register_forward_post_hook(
                    lambda l, i, o: self._add("norm", np.prod(_shape(o)))))

    def _enter_rule(self, layer, inputs):
        self._suppress += 1

    def _exit_rule(self, rule, layer, inputs, output):
        self._suppress -= 1
        self._add("attention", rule(layer, inputs, output))

    # -- functional ops -----------------------------------------------------------------------------------
    def _patch(self, owner, name, kind, macs_fn):
        original = getattr(owner, name, None)
        if original is None:
            return

        @functools.wraps(original)
        def counted(*args, **kwargs):
            if self._in_op == 0:
                self._add(kind, macs_fn(*args, **kwargs))
            self._in_op += 1
            try:
                return original(*args, **kwargs)
            finally:
                self._in_op -= 1

        self._patches.append((owner, name, original))
        setattr(owner, name, counted)

    def _patch_ops(self):
        def matmul(x, y, transpose_x=False, transpose_y=False, name=None):
            return matmul_macs(_shape(x), _shape(y), transpose_x, transpose_y)

        def linear(x, weight, bias=None, name=None):  # weight: [in, out]
            return matmul_macs(_shape(x), _shape(weight))

        def einsum(equation, *operands):
            return einsum_macs(equation, *[_shape(o) for o in operands])

        self._patch(F, "linear", "linear", linear)
        for owner in (paddle, paddle.linalg, paddle.Tensor):
            self._patch(owner, "matmul", "matmul", matmul)
        for owner in (paddle, paddle.Tensor):
            self._patch(owner, "bmm", "matmul", lambda x, y, name=None: matmul_macs(_shape(x), _shape(y)))
            self._patch(owner, "mm", "matmul", lambda x, y, name=None: matmul_macs(_shape(x), _shape(y)))
        self._patch(paddle, "einsum", "matmul", einsum)
        self._patch(paddle.Tensor, "__matmul__", "matmul", lambda x, y: matmul_macs(_shape(x), _shape(y)))
        self._patch(paddle.Tensor, "__rmatmul__", "matmul", lambda x, y: matmul_macs(_shape(y), _shape(x)))

    def __enter__(self):
        self.by_kind = {}
        try:
            self._hook_layers()
            self._patch_ops()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        for owner, name, original in reversed(self._patches):
            setattr(owner, name, original)
        self._handles, self._patches = [], []
        return False


def count_flops(model, input_shape, include_norm=False, layer_rules=None, by_kind=False):
    """MACs of one eval-mode forward pass of ``model`` on a zero tensor of ``input_shape`` (e.g.
    ``(1, 3, 224, 224)``); with ``by_kind=True`` also {conv, linear, matmul, attention[, norm]: MACs}.
    The model is put in eval mode and left there."""
    model.eval()
    x = paddle.zeros(list(input_shape), dtype="float32")
    with paddle.no_grad(), FlopCounter(model, include_norm, layer_rules) as counter:
        model(x)
    return (counter.total, dict(counter.by_kind)) if by_kind else counter.total


def format_count(n, unit=1e9, digits=2):
    """``n`` in units (1e9 -> G), rounded; a helper for tables."""
    return f"{n / unit:.{digits}f}" if math.isfinite(n) else "-"
