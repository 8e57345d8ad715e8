"""The notebook Conv2Former's export-time formulations (issue 10: LIME through the predictor): the exported program
computes what the dygraph model computes (float32, same maths in other ops), without the ops that made the bf16
predictor slow (group_norm, which oneDNN runs in fp32; a depthwise kernel larger than twice its map)."""
import numpy as np
import paddle
import pytest

import ppvit
from ppvit.models.conv2former import GroupNormDownsample

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
    prefix = str(tmp_path / "m")
    paddle.jit.save(layer, prefix, input_spec=[paddle.static.InputSpec([None] + list(shape[1:]), "float32")])
    loaded = paddle.jit.load(prefix)
    return loaded, [op.name() for op in loaded.program().global_block().ops]


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
    paddle.seed(0)
    model = ppvit.create_model("conv2former_n_cifar")
    _perturb(model, 0.05)
    model.eval()
    x = paddle.randn([2, 3, 32, 32])
    with paddle.no_grad():
        want = model(x).numpy()
    loaded, ops = _saved(model, tmp_path, (2, 3, 32, 32))
    assert not any(op.endswith("group_norm") for op in ops), ops
    kernels = [list(op.operand_source(1).shape)[2:] for op in loaded.program().global_block().ops
               if op.name().endswith("depthwise_conv2d")]
    # one 11x11 modulation (blocks of stages 1-3) or 7x7 (stage 4) and one 3x3 MLP conv per block
    assert (kernels.count([11, 11]), kernels.count([7, 7]), kernels.count([3, 3])) == (2 + 2 + 8, 2, 14), kernels
    assert_close(loaded(x).numpy(), want, "exported conv2former_n_cifar")
