"""Conv2Former: the notebook model (000) and the official architecture (001 + HVision-NKU/Conv2Former)."""
import json
import os

import numpy as np
import paddle
import pytest

import ppvit
from ppvit.models.conv2former import Block, Conv2Former, checkpoint_filter_fn
from ppvit.models.helpers import load_pretrained
from tests.conftest import FIXTURES
from tests.parity import check_notebook_parity, count_params
from tests.reference import nb000_conv2former as nb


def _perturb(model, scale=0.05):
    """Move every parameter off its init (identity norms, zero biases) so the comparison sees them all."""
    with paddle.no_grad():
        for p in model.parameters():
            p.set_value(p + scale * paddle.randn(p.shape, dtype=p.dtype))


def test_registered():
    names = ppvit.list_models("conv2former*")
    assert names == sorted(["conv2former_n_cifar", "conv2former_n", "conv2former_t", "conv2former_s",
                            "conv2former_b", "conv2former_l"])


def test_notebook_parity(tmp_path):
    ref = nb.Conv2Former(num_classes=10, depths=(2, 2, 8, 2), dim=(64, 128, 256, 512), mlp_ratio=2,
                         drop_path_rate=0.1)
    _perturb(ref)
    model = check_notebook_parity(ref, "conv2former_n_cifar", tmp_path, (2, 3, 32, 32))
    # the notebook's defaults are the registered defaults
    assert model.num_classes == 10
    assert model.layers[3].blocks[1].drop_path.drop_prob == pytest.approx(0.1)
    assert count_params(model) == count_params(ref)


def _torch_fixture(name):
    data = np.load(os.path.join(FIXTURES, name))
    torch_state = {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}
    cfg = {k[len("cfg/"):]: data[k].tolist() for k in data.files if k.startswith("cfg/")}
    return torch_state, cfg, data["x"], data["y"]


def _compare_with_torch(model, torch_state, x, y):
    state = checkpoint_filter_fn(torch_state)
    own = model.state_dict()
    assert set(state) == set(own), (sorted(set(state) ^ set(own)))
    load_pretrained(model, state)
    model.eval()
    with paddle.no_grad():
        got = model(paddle.to_tensor(x)).numpy()
    assert got.shape == y.shape
    diff = float(np.abs(got - y).max())
    assert diff <= 1e-4, f"max abs difference to PyTorch {diff}"
    return diff


def test_official_block_matches_pytorch():
    torch_state, cfg, x, y = _torch_fixture("conv2former_block.npz")
    block = Block(cfg["dim"], kernel_size=cfg["kernel_size"], mlp_ratio=cfg["mlp_ratio"])
    _compare_with_torch(block, torch_state, x, y)


def test_reduced_official_model_matches_pytorch():
    # covers the stem (BatchNorm statistics renamed), LayerNorm+conv downsampling, the conv head and the
    # transposed Linear ``pred``
    torch_state, cfg, x, y = _torch_fixture("conv2former_tiny.npz")
    assert any(k.endswith("running_var") for k in torch_state)
    model = Conv2Former(dims=cfg["dims"], depths=cfg["depths"], kernel_size=cfg["kernel_size"],
                        num_classes=cfg["num_classes"], head_dim=cfg["head_dim"])
    _compare_with_torch(model, torch_state, x, y)


def test_official_keys_are_a_rename_of_pytorch():
    # the official tree: torch keys map 1:1 (minus num_batches_tracked) onto a full-size conv2former_n
    model = ppvit.create_model("conv2former_n")
    keys = set(model.state_dict())
    assert "downsample_layers.0.2._mean" in keys and "downsample_layers.0.2._variance" in keys
    assert "stages.2.7.attn.att.2.weight" in keys and "stages.2.7.layer_scale_2" in keys
    assert "head.0.weight" in keys and "head.2.weight" in keys
    assert list(model.state_dict()["pred.weight"].shape) == [1280, 1000]
    fake_torch = {"module.pred.weight": np.zeros((1000, 1280), "float32"),
                  "downsample_layers.0.2.running_var": np.ones(32, "float32"),
                  "downsample_layers.0.2.num_batches_tracked": np.array(3)}
    out = checkpoint_filter_fn({"state_dict": fake_torch})
    assert sorted(out) == ["downsample_layers.0.2._variance", "pred.weight"]
    assert out["pred.weight"].shape == (1280, 1000)


# the paper's Table (ImageNet-1k, 1000 classes), in millions, rounded as printed
PAPER_PARAMS_M = {"n": 15, "t": 27, "s": 50, "b": 90, "l": 199}


@pytest.mark.parametrize("variant", list(PAPER_PARAMS_M))
def test_official_param_counts(variant):
    """Exactly the official code's count (scripts/make_fixtures_conv2former_params.py), which the paper rounds."""
    with open(os.path.join(FIXTURES, "conv2former_official_param_counts.json"), encoding="utf-8") as f:
        official = json.load(f)[variant]["params"]
    with paddle.LazyGuard():  # shapes only, no memory
        model = ppvit.create_model(f"conv2former_{variant}", num_classes=1000)
    n = count_params(model, trainable_only=True)
    assert n == official, f"conv2former_{variant}: {n} parameters, the official code has {official}"
    assert round(n / 1e6) == PAPER_PARAMS_M[variant]


def test_cifar_param_count_and_head_reset():
    model = ppvit.create_model("conv2former_n_cifar")
    assert count_params(nb.Conv2Former(num_classes=10, mlp_ratio=2, drop_path_rate=0.1)) == count_params(model)
    model.reset_classifier(100)
    assert list(model.head.weight.shape) == [512, 100]
    assert list(model(paddle.randn([1, 3, 32, 32])).shape) == [1, 100]


def _train_step(model, shape, num_classes):
    model.train()
    x = paddle.randn(shape)
    logits = model(x)
    assert list(logits.shape) == [shape[0], num_classes]
    loss = paddle.nn.functional.cross_entropy(logits, paddle.to_tensor([0, 1]))
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if not p.stop_gradient}
    assert all(g is not None for g in grads.values()), [n for n, g in grads.items() if g is None]
    total = sum(float(paddle.abs(g).sum()) for g in grads.values())
    assert np.isfinite(total) and total > 0
    return grads


def test_train_backward_cifar():
    model = ppvit.create_model("conv2former_n_cifar", drop_path_rate=0.2)
    grads = _train_step(model, [2, 3, 32, 32], 10)
    assert float(paddle.abs(grads["fc1.weight"]).sum()) > 0  # gradient reaches the stem


def test_train_backward_official_n():
    model = ppvit.create_model("conv2former_n", drop_path_rate=0.2, num_classes=10)
    assert model.stages[3][1].drop_path.drop_prob == pytest.approx(0.2)
    grads = _train_step(model, [2, 3, 64, 64], 10)
    assert float(paddle.abs(grads["downsample_layers.0.0.weight"]).sum()) > 0
    assert float(paddle.abs(grads["stages.0.0.layer_scale_1"]).sum()) > 0


def test_forward_features_and_pretrained_head_swap(tmp_path):
    model = ppvit.create_model("conv2former_n", num_classes=10)
    assert model.head_names == ("pred",)
    path = os.path.join(str(tmp_path), "w.pdparams")
    paddle.save(model.state_dict(), path)
    # another class count: everything but ``pred`` loads, ``pred`` stays fresh
    other = ppvit.create_model("conv2former_n", pretrained=path, num_classes=5)
    np.testing.assert_array_equal(other.head[0].weight.numpy(), model.head[0].weight.numpy())
    other.eval()
    with paddle.no_grad():
        feats = other.forward_features(paddle.randn([1, 3, 64, 64]))
    assert list(feats.shape) == [1, 1280]


# --------------------------------------------------------------------------------------------------------
# conv2former_n is the official HVision-NKU configuration: a 7x7 kernel (scripts/make_fixtures_conv2former_n.py)
# --------------------------------------------------------------------------------------------------------
def test_conv2former_n_is_the_official_kernel7_configuration():
    model = ppvit.create_model("conv2former_n")
    assert count_params(model, trainable_only=True) == 14_992_840  # the official model's count (1000 classes)
    assert list(model.state_dict()["stages.3.1.attn.att.2.weight"].shape) == [512, 1, 7, 7]
    # the 11x11 variant stays one argument away
    wide = ppvit.create_model("conv2former_n", kernel_size=11)
    assert list(wide.state_dict()["stages.3.1.attn.att.2.weight"].shape) == [512, 1, 11, 11]
    assert round(count_params(wide, trainable_only=True) / 1e6, 2) == 15.24


def test_full_size_official_conv2former_n_layout_converts():
    # every key and shape of the official PyTorch Conv2Former-N (written from the transcribed official code)
    # maps onto the registered conv2former_n with nothing missing, left over or mis-shaped
    import json

    from ppvit.commands.convert import build_model, convert_state_dict
    from ppvit.io import compare_state_dict

    with open(os.path.join(FIXTURES, "conv2former_n_official_key_shapes.json")) as f:
        official = json.load(f)
    torch_state = {k: np.zeros(v, "float32") for k, v in official["shapes"].items()}
    assert torch_state["stages.3.1.attn.att.2.weight"].shape == (512, 1, 7, 7)
    state = convert_state_dict("conv2former_n", torch_state)
    model = build_model("conv2former_n", state)
    assert model.num_classes == 1000
    assert not compare_state_dict(model.state_dict(), state)
    assert count_params(model, trainable_only=True) == official["trainable_params"]


def test_official_kernel7_layout_converts_and_matches_pytorch(tmp_path):
    # a reduced official model with the 7x7 kernel, saved by PyTorch: converted by the tool's code path and
    # loaded into the registered conv2former_n (whose default kernel is 7: no kernel_size given)
    from safetensors.numpy import save_file

    from ppvit.commands.convert import convert_checkpoint

    torch_state, cfg, x, y = _torch_fixture("conv2former_n_k7_tiny.npz")
    assert cfg["kernel_size"] == 7 and torch_state["stages.0.0.attn.att.2.weight"].shape[-1] == 7
    src, dst = str(tmp_path / "official.safetensors"), str(tmp_path / "conv2former_n.pdparams")
    save_file({k: np.ascontiguousarray(v) for k, v in torch_state.items()}, src)
    kwargs = dict(dims=cfg["dims"], depths=cfg["depths"], head_dim=cfg["head_dim"])
    convert_checkpoint("conv2former_n", src, dst, **kwargs)
    model = ppvit.create_model("conv2former_n", pretrained=dst, num_classes=cfg["num_classes"], **kwargs)
    model.eval()
    with paddle.no_grad():
        got = model(paddle.to_tensor(x)).numpy()
    diff = float(np.abs(got - y).max())
    assert diff <= 1e-4, f"max abs difference to PyTorch {diff}"
