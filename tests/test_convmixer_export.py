"""ConvMixer's export-time BatchNorm (convmixer_256_8 through the bf16 predictor): in a saved program
``layers.PostActBatchNorm2D`` is the same per-channel affine as a 1x1 depthwise conv, with no batch_norm op (oneDNN's
bf16 predictor ran batch_norm in fp32 between reorders); dygraph, training and checkpoints are unchanged."""
import numpy as np
import paddle
import pytest

import ppvit
from ppvit.deploy.rewrites import for_export
from ppvit.models.layers import PostActBatchNorm2D

RTOL = 1e-5  # float32: max |static - dygraph| relative to max |dygraph|


def assert_close(got, want, what):
    err = float(np.abs(np.asarray(got) - np.asarray(want)).max()) / max(float(np.abs(want).max()), 1e-12)
    assert err <= RTOL, f"{what}: relative error {err:.2e} > {RTOL:.0e}"


def _perturb_bn(layer):
    """Running statistics and affine far from (0, 1, 1, 0), so a dropped or misplaced term shows."""
    with paddle.no_grad():
        for m in layer.sublayers(include_self=True):
            if isinstance(m, paddle.nn.BatchNorm2D):
                c = m._mean.shape[0]
                m._mean.set_value(paddle.randn([c]))
                m._variance.set_value(paddle.rand([c]) * 3 + 0.1)
                m.weight.set_value(paddle.randn([c]))
                m.bias.set_value(paddle.randn([c]))


def _saved(layer, tmp_path, shape):
    """``layer`` saved as ``export_model`` saves it (a copy with the export rewrites) and loaded back, with the op
    names of its program."""
    prefix = str(tmp_path / "m")
    paddle.jit.save(for_export(layer), prefix, input_spec=[paddle.static.InputSpec([None] + list(shape[1:]), "float32")])
    loaded = paddle.jit.load(prefix)
    return loaded, [op.name() for op in loaded.program().global_block().ops]


@pytest.mark.parametrize("kwargs", [{}, {"epsilon": 1e-3}, {"weight_attr": False, "bias_attr": False}],
                         ids=["default", "eps1e-3", "no-affine"])
def test_batchnorm_static_is_the_same_affine(kwargs, tmp_path):
    paddle.seed(0)
    c = 6
    layer = PostActBatchNorm2D(c, **kwargs)
    plain = paddle.nn.BatchNorm2D(c, **kwargs)
    if layer.weight is not None:
        _perturb_bn(layer)
    else:  # statistics only
        with paddle.no_grad():
            layer._mean.set_value(paddle.randn([c]))
            layer._variance.set_value(paddle.rand([c]) * 3 + 0.1)
    assert list(layer.state_dict()) == list(plain.state_dict())
    plain.set_state_dict(layer.state_dict())
    layer.eval()
    plain.eval()
    x = paddle.randn([3, c, 5, 7]) * 2 + 1
    want = plain(x).numpy()
    np.testing.assert_array_equal(layer(x).numpy(), want)  # dygraph: nn.BatchNorm2D itself
    loaded, ops = _saved(layer, tmp_path, x.shape)
    assert not any(op.endswith("batch_norm") or op.endswith("batch_norm_") for op in ops), ops
    assert any(op.endswith("depthwise_conv2d") for op in ops), ops
    assert_close(loaded(x).numpy(), want, "saved program")


def test_batchnorm_training_still_normalises_by_the_batch():
    """Training mode (dygraph) normalises with batch statistics and updates the running ones, as nn.BatchNorm2D."""
    paddle.seed(0)
    layer, plain = PostActBatchNorm2D(4), paddle.nn.BatchNorm2D(4)
    x = paddle.randn([8, 4, 3, 3]) * 3 + 2
    np.testing.assert_allclose(layer(x).numpy(), plain(x).numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(layer._mean.numpy(), plain._mean.numpy(), rtol=0, atol=1e-7)
    assert np.abs(layer._mean.numpy()).max() > 0.01  # the running mean moved


def test_exported_convmixer_matches_dygraph_without_batch_norm(tmp_path):
    """convmixer_256_8 at 32x32: the saved program has no batch_norm (17 BNs -> 17 more depthwise convs than the
    8 5x5 ones) and its logits are the dygraph model's; the state_dict keys are the official ones."""
    paddle.seed(0)
    model = ppvit.create_model("convmixer_256_8")
    _perturb_bn(model)
    model.eval()
    keys = list(model.state_dict())
    assert "2._mean" in keys and "3.0.fn.2._variance" in keys and "3.3.weight" in keys
    x = paddle.randn([2, 3, 32, 32])
    with paddle.no_grad():
        want = model(x).numpy()
    loaded, ops = _saved(model, tmp_path, (2, 3, 32, 32))
    assert not any("batch_norm" in op for op in ops), ops
    assert sum(op.endswith("depthwise_conv2d") for op in ops) == 8 + 17, ops
    assert_close(loaded(x).numpy(), want, "exported convmixer_256_8")
