"""CoAtNet (003): PyTorch parity through fixtures, the fixed input size, parameter counts, training."""
import os

import numpy as np
import paddle
import pytest

import ppvit
from ppvit.io import save_state
from ppvit.models.coatnet import CoAtNet, checkpoint_filter_fn, relative_position_index
from ppvit.models.registry import rename_old_kwargs
from tests.parity import count_params

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
TINY = dict(num_blocks=[1, 2, 1, 2, 1], channels=[8, 8, 16, 16, 16])


def load_fixture(name):
    """(torch state_dict, config, input, output) written by scripts/make_fixtures_coatnet_convmixer.py."""
    with np.load(os.path.join(FIXTURES, f"{name}.npz")) as f:
        state = {k[len("state/"):]: f[k] for k in f.files if k.startswith("state/")}
        config = {k[len("config/"):]: f[k].tolist() for k in f.files if k.startswith("config/")}
        return state, config, f["x"], f["y"]


def test_matches_pytorch_source(tmp_path):
    """003's PyTorch CoAtNet (reduced, 64x64), its weights converted by the key map and loaded the way a user
    does, gives the same logits."""
    torch_state, cfg, x, want = load_fixture("coatnet_tiny64")
    state = checkpoint_filter_fn(torch_state)
    path = tmp_path / "coatnet_from_torch.pdparams"
    save_state(state, path)
    model = ppvit.create_model("coatnet_0", pretrained=str(path), **cfg)
    own = model.state_dict()
    assert set(state) == set(own)
    for k, v in state.items():
        assert list(v.shape) == list(own[k].shape), k
    # the rename is a plain one: every Paddle key is a PyTorch key with BN's names
    renamed = {k.replace("running_mean", "_mean").replace("running_var", "_variance") for k in torch_state}
    assert set(own) <= renamed
    model.eval()
    with paddle.no_grad():
        got = model(paddle.to_tensor(x)).numpy()
    assert got.shape == want.shape
    diff = float(np.abs(got - want).max())
    assert diff <= 1e-4, f"max abs difference to PyTorch {diff}"


def test_relative_index_is_derived_not_stored():
    torch_state, cfg, _, _ = load_fixture("coatnet_tiny64")
    model = CoAtNet(**rename_old_kwargs(cfg))  # 003 spells img_size image_size
    assert not any("relative_index" in k for k in model.state_dict())
    assert not any("relative_index" in k for k in checkpoint_filter_fn(torch_state))
    # ...and it equals the buffer the PyTorch code saves
    for name, layer in model.named_sublayers():
        if hasattr(layer, "relative_index"):
            np.testing.assert_array_equal(layer.relative_index.numpy(),
                                          torch_state[f"{name}.relative_index"].reshape(-1))
    assert relative_position_index(2, 3).max() == (2 * 2 - 1) * (2 * 3 - 1) - 1


# 003 built in PyTorch (scripts/make_fixtures_coatnet_convmixer.py prints them); coatnet_2 has 003's 1026
PARAMS = {"coatnet_0": 17_788_344, "coatnet_1": 33_168_192, "coatnet_2": 55_764_236,
          "coatnet_3": 117_719_488, "coatnet_4": 203_950_768}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_counts(name):
    with paddle.LazyGuard():  # shapes only, no memory
        model = ppvit.create_model(name)
    assert count_params(model, trainable_only=True) == PARAMS[name]
    if name == "coatnet_0":
        assert round(PARAMS[name] / 1e6, 2) == 17.79
    assert model.img_size == (224, 224) and model.num_classes == 1000


def test_wrong_input_size_names_both_sizes():
    model = CoAtNet(img_size=64, **TINY)
    with pytest.raises(ValueError, match=r"64x64.*32x32"):
        model(paddle.randn([1, 3, 32, 32]))
    with pytest.raises(ValueError, match="multiple of 32"):
        CoAtNet(img_size=100, **TINY)
    # a non-square size is fine when it is the one the model was built for
    assert CoAtNet(img_size=(32, 64), num_classes=3, **TINY)(paddle.randn([1, 3, 32, 64])).shape == [1, 3]


def test_train_step_with_drop_path():
    model = CoAtNet(img_size=32, num_classes=5, drop_path_rate=0.5, **TINY)
    model.train()
    x = paddle.randn([2, 3, 32, 32])
    # train mode: the residual branches are dropped per sample, so passes differ
    first = model(x).numpy()
    assert any(not np.allclose(first, model(x).numpy()) for _ in range(5))
    loss = paddle.nn.functional.cross_entropy(model(x), paddle.to_tensor([1, 3]))
    loss.backward()
    for name, p in model.named_parameters():
        if not p.stop_gradient:
            assert p.grad is not None and np.isfinite(p.grad.numpy()).all(), name
    assert float(paddle.abs(model.s3[1].attn.relative_bias_table.grad).sum()) > 0

    # drop path adds no keys and is the identity in eval mode
    plain = CoAtNet(img_size=32, num_classes=5, **TINY)
    assert list(plain.state_dict()) == list(model.state_dict())
    plain.set_state_dict(model.state_dict())
    model.eval()
    plain.eval()
    np.testing.assert_allclose(model(x).numpy(), plain(x).numpy(), rtol=0, atol=1e-6)


def test_model_surface(tmp_path):
    model = CoAtNet(img_size=32, num_classes=10, **TINY)
    x = paddle.randn([2, 3, 32, 32])
    assert model.forward_features(x).shape == [2, 16]
    nwd = model.no_weight_decay()
    params = dict(model.named_parameters())
    assert nwd and all(n in params and n.endswith("relative_bias_table") for n in nwd)

    # a checkpoint for 10 classes loads into a 3-class model, the classifier (``fc``) left fresh
    path = tmp_path / "w.pdparams"
    save_state(model.state_dict(), path)
    other = ppvit.create_model("coatnet_0", pretrained=str(path), num_classes=3, image_size=32, **TINY)
    assert other.fc.weight.shape == [16, 3]
    np.testing.assert_array_equal(other.s4[0].attn.qkv.weight.numpy(), model.s4[0].attn.qkv.weight.numpy())

    model.reset_classifier(7)
    assert model(x).shape == [2, 7]
    model.reset_classifier(0)
    assert model(x).shape == [2, 16]
