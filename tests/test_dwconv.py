"""DepthwiseConv2D: every formulation is Paddle's depthwise conv, forward and gradients; every
family's model gives the same logits and gradients with the layer forced to Paddle's op; checkpoints and
exported programs are unchanged."""
import numpy as np
import paddle
import pytest

import ppvit
from ppvit.deploy.rewrites import ExportDepthwiseConv2D, for_export
from ppvit.kernels import DEPTHWISE_FORMULATIONS, depthwise_formulation
from ppvit.kernels import depthwise as dw_kernels
from ppvit.kernels.depthwise import same_padding_odd_kernel
from ppvit.kernels.pointwise import is_pointwise
from ppvit.models import layers
from ppvit.models.layers import DepthwiseConv2D
from ppvit.models.profile import count_flops

RTOL = 1e-5  # float32: max |fast - plain| relative to max |plain|, per tensor


def assert_close(got, want, what):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, what
    scale = max(float(np.abs(want).max()), 1e-12)
    err = float(np.abs(got - want).max()) / scale
    assert err <= RTOL, f"{what}: relative error {err:.2e} > {RTOL:.0e}"


def run(layer, x, grad_out, mode):
    """Output and (input, weight, bias) gradients of ``sum(layer(x) * grad_out)`` in ``mode``."""
    layer.clear_gradients()
    x = paddle.to_tensor(x, stop_gradient=False)
    with depthwise_formulation(mode):
        y = layer(x)
    (y * paddle.to_tensor(grad_out)).sum().backward()
    grads = [x.grad.numpy(), layer.weight.grad.numpy()]
    if layer.bias is not None:
        grads.append(layer.bias.grad.numpy())
    return [y.numpy()] + grads


# (batch, channels, H, W, kernel): each kernel the families use (3, 5, 7, 9, 11), odd and non-square maps,
# batch 1, and kernels larger than the map
SHAPES = [
    (2, 4, 8, 8, 11), (1, 3, 16, 16, 11), (2, 3, 4, 4, 11), (2, 5, 13, 11, 11),
    (2, 4, 16, 16, 5), (1, 6, 7, 9, 5),
    (2, 3, 12, 12, 7), (1, 2, 5, 3, 7),
    (2, 3, 9, 9, 9),
    (2, 4, 16, 16, 3), (1, 3, 7, 7, 3), (2, 2, 1, 5, 3), (2, 3, 32, 32, 3),
]


@pytest.mark.parametrize("formulation", DEPTHWISE_FORMULATIONS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "b{}c{}_{}x{}_k{}".format(*s))
def test_formulation_matches_paddle_conv(formulation, shape):
    b, c, h, w, k = shape
    paddle.seed(0)
    layer = DepthwiseConv2D(c, c, k, padding=k // 2, groups=c)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, c, h, w)).astype("float32")
    grad_out = rng.standard_normal((b, c, h, w)).astype("float32")
    want = run(layer, x, grad_out, "reference")
    got = run(layer, x, grad_out, formulation)
    for name, g, r in zip(["output", "input grad", "weight grad", "bias grad"], got, want):
        assert_close(g, r, f"{formulation} {shape} {name}")


def test_same_padding_and_no_bias():
    layer = DepthwiseConv2D(3, 3, 5, groups=3, padding="same", bias_attr=False)
    assert same_padding_odd_kernel(layer) and layer.bias is None
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 10, 10)).astype("float32")
    grad_out = rng.standard_normal((2, 3, 10, 10)).astype("float32")
    want = run(layer, x, grad_out, "reference")
    for formulation in DEPTHWISE_FORMULATIONS:
        for name, g, r in zip(["output", "input grad", "weight grad"], run(layer, x, grad_out, formulation), want):
            assert_close(g, r, f"{formulation} {name}")


@pytest.mark.parametrize("kwargs", [dict(kernel_size=3, stride=2, padding=1), dict(kernel_size=3, padding=2, dilation=2),
                                    dict(kernel_size=4, padding="same"), dict(kernel_size=3, padding=0),
                                    dict(kernel_size=3, padding=1, padding_mode="reflect"),
                                    dict(kernel_size=(3, 5), padding=(1, 2))])
def test_other_configurations_are_paddles_conv(kwargs):
    """Strides, dilation, even or non-square kernels, other paddings: exactly nn.Conv2D, in every mode."""
    paddle.seed(0)
    layer = DepthwiseConv2D(4, 4, groups=4, **kwargs)
    paddle.seed(0)
    plain = paddle.nn.Conv2D(4, 4, groups=4, **kwargs)
    assert not same_padding_odd_kernel(layer)
    x = paddle.randn([2, 4, 9, 9])
    for mode in ("auto",) + DEPTHWISE_FORMULATIONS:
        with depthwise_formulation(mode):
            np.testing.assert_array_equal(layer(x).numpy(), plain(x).numpy())


def test_state_dict_is_conv2d_and_loads_both_ways():
    dw = DepthwiseConv2D(8, 8, 11, padding=5, groups=8)
    conv = paddle.nn.Conv2D(8, 8, 11, padding=5, groups=8)
    assert {k: v.shape for k, v in dw.state_dict().items()} == {k: v.shape for k, v in conv.state_dict().items()}
    assert list(dw.state_dict()) == ["weight", "bias"]
    dw.set_state_dict(conv.state_dict())
    x = paddle.randn([1, 8, 6, 6])
    assert_close(dw(x).numpy(), conv(x).numpy(), "loaded nn.Conv2D weights")


def test_refuses_non_depthwise_and_unknown_formulation():
    with pytest.raises(ValueError, match="groups == in_channels == out_channels"):
        DepthwiseConv2D(4, 8, 3, padding=1, groups=4)
    with pytest.raises(ValueError, match="unknown depthwise formulation 'winograd'"):
        with depthwise_formulation("winograd"):
            pass


def test_rule_picks_each_formulation():
    """The shape rule is a table, not a constant: small maps, large kernels and small kernels differ."""
    shapes = [(4, 11), (8, 11), (32, 11), (16, 5), (32, 3), (56, 3)]
    assert {dw_kernels._select_formulation(h, h, k) for h, k in shapes} == {"toeplitz", "direct"}
    # without ppvit's C loop (no compiler): the formulations in Paddle's ops
    picks = {dw_kernels._select_formulation(h, h, k, direct=False) for h, k in shapes}
    assert picks == set(DEPTHWISE_FORMULATIONS) - {"direct"}
    # tiny work stays on Paddle's kernel (fixed overheads dominate)
    assert dw_kernels._select_formulation(8, 8, 11, maps=2 * 4) == "plain"
    assert dw_kernels._select_formulation(8, 8, 11, maps=32 * 256) == "toeplitz"


# every family with depthwise convs, at a small input (ConViT has none: its only conv is the patch embedding)
FAMILY_MODELS = [
    ("conv2former_n_cifar", {}, 16),
    ("conv2former_n", {"num_classes": 10}, 64),
    ("convmixer_256_8", {}, 16),
    ("dilateformer_t", {"num_classes": 10, "img_size": 64}, 64),
    ("coatnet_0", {"num_classes": 10, "image_size": 64}, 64),
]


def model_run(model, x, mode):
    model.clear_gradients()
    with depthwise_formulation(mode):
        logits = model(paddle.to_tensor(x))
        (logits * paddle.linspace(-1, 1, logits.shape[-1])).sum().backward()
    grads = {n: p.grad.numpy() for n, p in model.named_parameters() if p.grad is not None}
    return logits.numpy(), grads


@pytest.fixture
def rule_at_any_size(monkeypatch):
    """The shape rule without its small-work cut-off (so small test inputs take the fast formulations);
    returns the set of formulations the rule picked."""
    picked = set()
    select = dw_kernels._select_formulation

    def spy(*args):
        picked.add(select(*args))
        return select(*args)

    monkeypatch.setattr(dw_kernels, "_MIN_MACS", 0)
    monkeypatch.setattr(dw_kernels, "_select_formulation", spy)
    return picked


@pytest.mark.parametrize("name,kwargs,size", FAMILY_MODELS, ids=[m[0] for m in FAMILY_MODELS])
def test_model_matches_plain_conv(name, kwargs, size, rule_at_any_size):
    paddle.seed(0)
    model = ppvit.create_model(name, **kwargs)
    model.eval()  # no dropout / drop path, so both passes compute the same function
    n_dw = sum(isinstance(m, DepthwiseConv2D) for m in model.sublayers())
    assert n_dw > 0, f"{name} builds no DepthwiseConv2D"
    assert not any(isinstance(m, paddle.nn.Conv2D) and not isinstance(m, DepthwiseConv2D)
                   and m._groups > 1 and m._groups == m._in_channels for m in model.sublayers()), \
        f"{name} still has a depthwise nn.Conv2D"
    x = np.random.default_rng(0).standard_normal((2, 3, size, size)).astype("float32")
    want_logits, want_grads = model_run(model, x, "reference")
    got_logits, got_grads = model_run(model, x, "auto")
    assert rule_at_any_size - {"plain"}, f"{name}: only Paddle's kernel was picked"
    assert_close(got_logits, want_logits, f"{name} logits")
    assert sorted(got_grads) == sorted(want_grads)
    for key in want_grads:
        assert_close(got_grads[key], want_grads[key], f"{name} grad of {key}")


def test_flop_count_unchanged():
    """ppvit's FLOP counter sees the layer as the conv it is (its internal matmuls are not counted)."""
    model = ppvit.create_model("conv2former_n_cifar")
    with depthwise_formulation("reference"):
        want = count_flops(model, (1, 3, 16, 16))
    assert count_flops(model, (1, 3, 16, 16)) == want


def test_static_graph_keeps_paddles_depthwise_op(tmp_path, rule_at_any_size):
    """paddle.jit.to_static / jit.save record the plain depthwise_conv2d op (oneDNN runs it in the
    predictor), with and without the export rewrites, and the saved program computes what the dygraph layer
    does."""
    paddle.seed(0)
    model = paddle.nn.Sequential(DepthwiseConv2D(4, 4, 11, padding=5, groups=4), DepthwiseConv2D(4, 4, 3, padding=1,
                                                                                                    groups=4))
    model.eval()
    x = paddle.randn([1, 4, 8, 8])
    want = model(x).numpy()  # dygraph: the Toeplitz formulation for both convs
    assert rule_at_any_size == {"toeplitz"}
    for name, saved in [("plain", model), ("rewritten", for_export(model))]:
        prefix = str(tmp_path / name)
        paddle.jit.save(saved, prefix, input_spec=[paddle.static.InputSpec([None, 4, 8, 8], "float32")])
        loaded = paddle.jit.load(prefix)
        ops = [op.name() for op in loaded.program().global_block().ops]
        assert sum("depthwise_conv2d" in op for op in ops) == 2, ops
        assert not any(op.endswith(("matmul", "fft_r2c", "fft_c2r", "gather")) for op in ops), ops
        assert_close(loaded(x).numpy(), want, f"{name} saved program vs dygraph")


@pytest.mark.parametrize("kwargs", [dict(kernel_size=1), dict(kernel_size=2, stride=2), dict(kernel_size=3, padding=1),
                                    dict(kernel_size=3, padding="same", groups=2), dict(kernel_size=1, bias_attr=False)])
def test_conv2d_fast_bias_is_nn_conv2d(kwargs):
    """layers.Conv2D adds its bias in Paddle's fast broadcast layout: same outputs and gradients as nn.Conv2D."""
    paddle.seed(0)
    layer = layers.Conv2D(4, 6, **kwargs)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 8, 8)).astype("float32")
    outs = {}
    for mode in ("reference", "auto"):
        layer.clear_gradients()
        xt = paddle.to_tensor(x, stop_gradient=False)
        with depthwise_formulation(mode):
            y = layer(xt)
        (y * y).sum().backward()
        outs[mode] = [y.numpy(), xt.grad.numpy(), layer.weight.grad.numpy()] + (
            [layer.bias.grad.numpy()] if layer.bias is not None else [])
    assert_close(outs["auto"][0], outs["reference"][0], f"{kwargs} output")  # a 1x1 conv is a matmul: rounding
    for g, r in zip(outs["auto"][1:], outs["reference"][1:]):
        assert_close(g, r, f"{kwargs} gradient")


# (batch, in, out, H, W): maps larger and smaller than the channel counts (the two weight-gradient branches),
# batch 1, a 1x1 map, non-square maps
POINTWISE = [(2, 4, 6, 8, 8), (2, 16, 24, 2, 3), (1, 8, 3, 5, 7), (3, 5, 5, 1, 1)]


@pytest.mark.parametrize("shape", POINTWISE, ids=lambda s: "b{}_{}to{}_{}x{}".format(*s))
@pytest.mark.parametrize("bias", [True, False])
def test_pointwise_conv_as_matmul_is_nn_conv2d(shape, bias):
    """A 1x1 layers.Conv2D (computed as a matmul per sample) gives nn.Conv2D's outputs and gradients."""
    b, cin, cout, h, w = shape
    paddle.seed(0)
    layer = layers.Conv2D(cin, cout, 1, bias_attr=None if bias else False)
    assert is_pointwise(layer)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((b, cin, h, w)).astype("float32")
    grad_out = rng.standard_normal((b, cout, h, w)).astype("float32")
    want = run(layer, x, grad_out, "reference")
    got = run(layer, x, grad_out, "auto")
    for g, r, what in zip(got, want, ["output", "input grad", "weight grad", "bias grad"]):
        assert_close(g, r, f"{shape} {what}")


def test_pointwise_conv_frozen_input_or_weight():
    """Gradients flow to whichever of input and weight needs one (the stem's input needs none; frozen weights)."""
    paddle.seed(0)
    layer = layers.Conv2D(3, 4, 1)
    plain = paddle.nn.Conv2D(3, 4, 1)
    plain.set_state_dict(layer.state_dict())
    x = paddle.randn([2, 3, 5, 5])
    (layer(x) ** 2).sum().backward()
    (plain(x) ** 2).sum().backward()
    assert_close(layer.weight.grad.numpy(), plain.weight.grad.numpy(), "weight grad, input without grad")
    layer.weight.stop_gradient = True
    xg = paddle.to_tensor(x.numpy(), stop_gradient=False)
    xp = paddle.to_tensor(x.numpy(), stop_gradient=False)
    (layer(xg) ** 2).sum().backward()
    (plain(xp) ** 2).sum().backward()
    assert_close(xg.grad.numpy(), xp.grad.numpy(), "input grad, frozen weight")


@pytest.mark.parametrize("kwargs", [dict(kernel_size=1, stride=2), dict(kernel_size=1, padding=1),
                                    dict(kernel_size=1, groups=2), dict(kernel_size=1, dilation=2)])
def test_other_1x1_convs_are_not_matmuls(kwargs):
    assert not is_pointwise(layers.Conv2D(4, 6, **kwargs))


def test_static_graph_keeps_paddles_conv_op(tmp_path):
    """An exported layers.Conv2D is nn.Conv2D's conv2d op + bias add, no matmul."""
    paddle.seed(0)
    model = paddle.nn.Sequential(layers.Conv2D(4, 6, 1), layers.Conv2D(6, 5, 2, stride=2))
    model.eval()
    x = paddle.randn([1, 4, 8, 8])
    want = model(x).numpy()
    prefix = str(tmp_path / "pw")
    paddle.jit.save(model, prefix, input_spec=[paddle.static.InputSpec([None, 4, 8, 8], "float32")])
    loaded = paddle.jit.load(prefix)
    ops = [op.name() for op in loaded.program().global_block().ops]
    assert sum(op.endswith("conv2d") for op in ops) == 2, ops
    assert not any(op.endswith("matmul") for op in ops), ops
    assert_close(loaded(x).numpy(), want, "saved program vs dygraph")


def _reference_and_saved(model, x, tmp_path, separate_bias=()):
    """(Paddle's own op on x in eval mode, the model saved with its export rewrites and loaded back);
    ``separate_bias``: indices of the Sequential's convs exported with their bias after the conv."""
    model.eval()
    with depthwise_formulation("reference"):
        want = model(x).numpy()
    exported = for_export(model)
    for i in separate_bias:
        exported._sub_layers[str(i)] = ExportDepthwiseConv2D(exported[i].conv, separate_bias=True)
    prefix = str(tmp_path / "dw")
    paddle.jit.save(exported, prefix, input_spec=[paddle.static.InputSpec([None] + list(x.shape[1:]), "float32")])
    return want, paddle.jit.load(prefix)


@pytest.mark.parametrize("hw", [(4, 4), (3, 5), (6, 2)])
def test_static_graph_crops_kernel_to_the_map(tmp_path, hw):
    """An exported program runs a kernel larger than twice the map as its central (2H-1) x (2W-1) taps (the
    others only ever meet the zero padding; oneDNN's bf16 kernel falls back to a slow GEMM for them): the same
    outputs as Paddle's full-kernel op."""
    h, w = hw
    paddle.seed(0)
    model = paddle.nn.Sequential(DepthwiseConv2D(4, 4, 11, padding=5, groups=4), DepthwiseConv2D(4, 4, 3, padding=1,
                                                                                                    groups=4))
    x = paddle.randn([2, 4, h, w])
    want, loaded = _reference_and_saved(model, x, tmp_path)
    kernels = [list(op.operand_source(1).shape) for op in loaded.program().global_block().ops
               if op.name().endswith("depthwise_conv2d")]
    assert kernels == [[4, 1, min(11, 2 * h - 1), min(11, 2 * w - 1)], [4, 1, 3, 3]], kernels
    assert_close(loaded(x).numpy(), want, "cropped kernel vs Paddle's full-kernel op")


@pytest.mark.parametrize("hw", [(8, 8), (4, 4), (2, 2)], ids=["11x11", "cropped-7x7", "cropped-3x3"])
def test_static_graph_adds_the_bias_after_the_conv_when_asked(tmp_path, hw):
    """Exported programs: a depthwise conv exported with separate_bias=True (full or cropped kernel) runs
    bias-free and adds its bias as `bias + conv` (oneDNN's faster bf16 kernel takes no bias; Paddle's fuse pass
    folds only `conv + bias` back); others keep the conv's own bias. Outputs are Paddle's op's, with a bias far
    from zero so a dropped or misplaced one shows."""
    h, w = hw
    paddle.seed(0)
    model = paddle.nn.Sequential(DepthwiseConv2D(4, 4, 11, padding=5, groups=4),
                                 DepthwiseConv2D(4, 4, 3, padding=1, groups=4))
    with paddle.no_grad():
        for layer in model:
            layer.bias.set_value(paddle.randn([4]) * 3)
    x = paddle.randn([2, 4, h, w])
    want, loaded = _reference_and_saved(model, x, tmp_path, separate_bias=[0])
    ops = loaded.program().global_block().ops
    convs = [op for op in ops if op.name().endswith("depthwise_conv2d")]
    for conv, separate in zip(convs, (True, False)):
        adds = [op for op in ops if op.name() == "pd_op.add"
                and any(op.operand_source(i).is_same(conv.result(0)) for i in range(op.num_operands()))]
        assert len(adds) == 1, [op.name() for op in ops]
        # which operand the conv's output is: 1 (bias first) when separate, 0 (Paddle's own bias add) otherwise
        assert adds[0].operand_source(1 if separate else 0).is_same(conv.result(0)), (hw, separate)
    assert_close(loaded(x).numpy(), want, "saved program vs Paddle's op")


def test_export_separates_the_bias_of_conv2formers_modulation_convs_only():
    """The export rewrites give Conv2Former's modulation convs (no activation follows them) a separate bias, its
    MLP's 3x3 convs (GELU follows) keep theirs, and the model itself is left as it was."""
    model = ppvit.create_model("conv2former_n_cifar")
    exported = for_export(model)
    blocks = [blk for stage in exported.layers for blk in stage.blocks]
    assert [blk.attn.a[2].separate_bias for blk in blocks] == [True] * len(blocks)
    assert [blk.mlp.pos.separate_bias for blk in blocks] == [False] * len(blocks)
    assert all(isinstance(blk.attn.a[2], DepthwiseConv2D) for stage in model.layers for blk in stage.blocks)
