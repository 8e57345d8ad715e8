"""Conv2Former's export-time rewrites (ppvit.deploy.rewrites): the exported program computes
what the dygraph model computes (float32, same maths in other ops), without the ops that made the bf16 predictor
slow (group_norm, which oneDNN runs in fp32; a depthwise kernel larger than twice its map; the transposes around
each block's LayerNorm2d, which Paddle's oneDNN predictor turns into copies and reorders)."""
import numpy as np
import paddle
import pytest

import ppvit
from ppvit.deploy import Predictor, export_model
from ppvit.deploy.rewrites import AffineFoldedConv, conv_after_affine, fold_layernorm2d, for_export
from ppvit.models.conv2former import GroupNormDownsample, NormConvDownsample
from ppvit.models.layers import Conv2D, LayerNorm2d
from tests.parity import assert_served_close

RTOL = 1e-5  # float32: max |static - dygraph| relative to max |dygraph|


def assert_close(got, want, what):
    err = float(np.abs(np.asarray(got) - np.asarray(want)).max()) / max(float(np.abs(want).max()), 1e-12)
    assert err <= RTOL, f"{what}: relative error {err:.2e} > {RTOL:.0e}"


def _perturb(layer, scale=0.5):
    """Norm weights off 1 and biases off 0, so a dropped or misplaced affine term shows."""
    with paddle.no_grad():
        for p in layer.parameters():
            p.set_value(p + scale * paddle.randn(p.shape, dtype=p.dtype))


def _saved(layer, tmp_path, shape):
    """``layer`` saved as ``export_model`` saves it (a copy with the export rewrites) and loaded back, with the op
    names of its program."""
    prefix = str(tmp_path / "m")
    paddle.jit.save(for_export(layer), prefix, input_spec=[paddle.static.InputSpec([None] + list(shape[1:]), "float32")])
    loaded = paddle.jit.load(prefix)
    return loaded, [op.name() for op in loaded.program().global_block().ops]


def _exported(name, size, tmp_path, **kwargs):
    """A model with perturbed weights, a batch of 2 at size x size: (input, dygraph logits, saved program, op
    names of the saved program)."""
    paddle.seed(0)
    model = ppvit.create_model(name, **kwargs)
    _perturb(model, 0.05)
    model.eval()
    x = paddle.randn([2, 3, size, size])
    with paddle.no_grad():
        want = model(x).numpy()
    return (x, want) + _saved(model, tmp_path, tuple(x.shape))


@pytest.mark.parametrize("shape", [(2, 8, 6, 6), (3, 4, 8, 4)], ids=["6x6", "8x4"])
def test_group_norm_downsample_static_is_the_same_maths(shape, tmp_path):
    """Static graph: LayerNorm over C*H*W with GroupNorm's affine folded into the conv; same state_dict keys."""
    paddle.seed(0)
    c = shape[1]
    layer = GroupNormDownsample(paddle.nn.GroupNorm(1, c), paddle.nn.Conv2D(c, 2 * c, 2, stride=2, bias_attr=False))
    _perturb(layer)
    layer.eval()
    plain = paddle.nn.Sequential(paddle.nn.GroupNorm(1, c), paddle.nn.Conv2D(c, 2 * c, 2, stride=2, bias_attr=False))
    plain.set_state_dict(layer.state_dict())
    assert list(layer.state_dict()) == ["0.weight", "0.bias", "1.weight"] == list(plain.state_dict())
    x = paddle.randn(shape) * 3 + 1
    want = plain(x).numpy()
    assert_close(layer(x).numpy(), want, "dygraph")
    loaded, ops = _saved(layer, tmp_path, shape)
    assert not any(op.endswith("group_norm") for op in ops), ops
    assert_close(loaded(x).numpy(), want, "saved program")


def test_exported_notebook_model_matches_dygraph_without_slow_ops(tmp_path):
    """conv2former_n_cifar at 32x32: the saved program has no group_norm and runs the last stage's 11x11
    modulation kernels on its 4x4 maps as their central 7x7 taps; its logits are the dygraph model's."""
    x, want, loaded, ops = _exported("conv2former_n_cifar", 32, tmp_path)
    assert not any(op.endswith("group_norm") for op in ops), ops
    # the blocks' 28 LayerNorm2d run as conv reductions; only the final norm (before pooling) transposes
    assert ops.count("pd_op.transpose") == 2, ops
    kernels = [list(op.operand_source(1).shape)[2:] for op in loaded.program().global_block().ops
               if op.name().endswith("depthwise_conv2d")]
    # one 11x11 modulation (blocks of stages 1-3) or 7x7 (stage 4) and one 3x3 MLP conv per block
    assert (kernels.count([11, 11]), kernels.count([7, 7]), kernels.count([3, 3])) == (2 + 2 + 8, 2, 14), kernels
    assert_close(loaded(x).numpy(), want, "exported conv2former_n_cifar")


class _NormThenConvs(paddle.nn.Layer):
    """LayerNorm2d feeding two convs, as a Conv2Former block's norm feeds its modulator and value convs."""

    def __init__(self, c, kernel, stride, dilation=1):
        super().__init__()
        self.norm = LayerNorm2d(c, eps=1e-6)
        self.a = Conv2D(c, 2 * c, kernel, stride=stride, dilation=dilation)
        self.b = paddle.nn.Conv2D(c, c, kernel, stride=stride, dilation=dilation, bias_attr=False)

    def forward(self, x):
        n = self.norm(x)
        return self.a(n), self.b(n)


@pytest.mark.parametrize("kernel,stride,dilation", [(1, 1, 1), (2, 2, 1), (3, 2, 2)], ids=["1x1", "2x2s2", "3x3s2d2"])
def test_layernorm2d_folded_into_convs_is_the_same_maths(kernel, stride, dilation, tmp_path):
    """Static graph: mean and variance as 1x1-conv reductions, the affine folded into each following unpadded conv
    (with and without its own bias, any kernel, stride, dilation); no transpose; the model itself (dygraph) is
    left with its LayerNorm2d."""
    paddle.seed(0)
    layer = _NormThenConvs(6, kernel, stride, dilation)
    _perturb(layer)
    layer.eval()
    x = paddle.randn([3, 6, 8, 8]) * 4 + 2  # a large mean: the variance is of the centred values
    n = paddle.nn.functional.layer_norm(x.transpose([0, 2, 3, 1]), [6], layer.norm.weight, layer.norm.bias, 1e-6)
    n = n.transpose([0, 3, 1, 2])
    want = [paddle.nn.functional.conv2d(n, layer.a.weight, layer.a.bias, stride, 0, dilation).numpy(),
            paddle.nn.functional.conv2d(n, layer.b.weight, None, stride, 0, dilation).numpy()]
    exported = for_export(layer)
    assert fold_layernorm2d(exported, "norm", ["a", "b"])
    assert isinstance(layer.norm, LayerNorm2d) and isinstance(layer.a, Conv2D)  # dygraph (training) keeps them
    for got, w in zip(layer(x), want):
        assert_close(got.numpy(), w, "dygraph")
    prefix = str(tmp_path / "m")
    paddle.jit.save(exported, prefix, input_spec=[paddle.static.InputSpec([None, 6, 8, 8], "float32")])
    loaded = paddle.jit.load(prefix)
    ops = [op.name() for op in loaded.program().global_block().ops]
    assert "pd_op.transpose" not in ops and "pd_op.layer_norm" not in ops, ops
    for got, w in zip(loaded(x), want):
        assert_close(got.numpy(), w, "saved program")


@pytest.mark.parametrize("conv_kwargs", [dict(padding=1), dict(padding="same"), dict(padding=[0, 1, 0, 1]),
                                         dict(padding=0, groups=2)], ids=["pad1", "same", "asymmetric", "groups"])
def test_layernorm2d_keeps_its_transposes_where_it_cannot_fold(conv_kwargs, tmp_path):
    """A padding conv after the norm would see the folded bias in its zero padding ('same' too, which Paddle
    records as zero padding plus the SAME algorithm), and a grouped one mixes no channels across groups: the norm
    stays LayerNorm, and the fold refuses such a conv outright."""
    norm, conv = LayerNorm2d(4), paddle.nn.Conv2D(4, 4, 3, **conv_kwargs)
    with pytest.raises(ValueError, match="unpadded, ungrouped"):
        conv_after_affine(conv, paddle.zeros([1, 4, 6, 6]), norm.weight, norm.bias)
    with pytest.raises(ValueError, match="unpadded, ungrouped"):
        AffineFoldedConv(conv, norm.weight, norm.bias)
    layer = NormConvDownsample(norm, conv)
    _perturb(layer)
    layer.eval()
    x = paddle.randn([2, 4, 6, 6])
    want = conv(norm(x)).numpy()
    loaded, ops = _saved(layer, tmp_path, (2, 4, 6, 6))
    assert "pd_op.layer_norm" in ops, ops
    assert_close(loaded(x).numpy(), want, "saved program")


def test_exported_official_conv2former_matches_dygraph_without_block_transposes(tmp_path):
    """conv2former_n (official layout, 64x64 here): blocks and LayerNorm + 2x2-conv downsamplings export without
    transposes (only the head's norm keeps them); logits are the dygraph model's."""
    x, want, loaded, ops = _exported("conv2former_n", 64, tmp_path, num_classes=10)
    assert ops.count("pd_op.transpose") == 2 and ops.count("pd_op.layer_norm") == 1, ops
    assert_close(loaded(x).numpy(), want, "exported conv2former_n")


@pytest.mark.parametrize("name,size", [("conv2former_n_cifar", 32), ("conv2former_n", 64)])
def test_exported_conv2former_with_trained_like_weights_passes_every_backend(name, size, tmp_path):
    """export_model on a Conv2Former whose norms and biases are far from their initial values (so the folded
    affine and the separate modulation bias matter): ONNX Runtime and Paddle fp32 verified (<= 1e-4 of dygraph),
    and what the predictors serve matches dygraph within their backends' tolerances."""
    paddle.seed(0)
    model = ppvit.create_model(name, num_classes=10)
    _perturb(model, 0.05)
    model.eval()
    prefix = str(tmp_path / name)
    info = export_model(model, prefix, size, {"model": name}, bench_batch_size=2)
    for backend in ("paddle", "onnxruntime"):
        assert info["backends"][backend]["verified"], info["backends"][backend]
    x = np.random.RandomState(0).rand(2, 3, size, size).astype("float32")
    with paddle.no_grad():
        want = model(paddle.to_tensor(x)).numpy()
    for backend, rec in info["backends"].items():
        if rec["verified"]:
            assert_served_close(backend, Predictor(prefix, device="cpu", backend=backend)(x), want)
