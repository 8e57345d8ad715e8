"""ConvMixer (003 / locuslab): PyTorch parity for three checkpoint layouts, parameter counts, training."""
import os

import numpy as np
import paddle
import pytest

import ppvit
from ppvit.io import save_state
from ppvit.models.convmixer import ConvMixer, checkpoint_filter_fn, detect_layout
from tests.parity import count_params

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")
ACTS = {"gelu": paddle.nn.GELU, "relu": paddle.nn.ReLU}


def load_fixture(name):
    """(torch state_dict, config, input, output) written by scripts/make_fixtures_coatnet_convmixer.py."""
    with np.load(os.path.join(FIXTURES, f"{name}.npz")) as f:
        state = {k[len("state/"):]: f[k] for k in f.files if k.startswith("state/")}
        config = {k[len("config/"):]: f[k].tolist() for k in f.files if k.startswith("config/")}
        return state, config, f["x"], f["y"]


# fixture -> (its layout, the registered variant whose activation it uses)
CASES = {
    "convmixer_flat_gelu": ("official", "convmixer_256_8"),
    "convmixer_timm_relu": ("timm", "convmixer_768_32"),  # the ReLU variant: no act_layer given below
    "convmixer_compact_gelu": ("compact", "convmixer_1536_20"),
}


@pytest.mark.parametrize("fixture", sorted(CASES))
def test_matches_pytorch_source(fixture, tmp_path):
    layout, variant = CASES[fixture]
    torch_state, cfg, x, want = load_fixture(fixture)
    assert detect_layout(torch_state) == (layout, cfg["depth"])
    state = checkpoint_filter_fn(torch_state)
    path = tmp_path / "convmixer_from_torch.pdparams"
    save_state(state, path)
    act = cfg.pop("act")
    assert isinstance(ppvit.create_model(variant, num_classes=2, dim=4, depth=1)[1], ACTS[act])
    model = ppvit.create_model(variant, pretrained=str(path), **cfg)
    own = model.state_dict()
    assert set(state) == set(own)
    for k, v in state.items():
        assert list(v.shape) == list(own[k].shape), k
    model.eval()
    with paddle.no_grad():
        got = model(paddle.to_tensor(x)).numpy()
    diff = float(np.abs(got - want).max())
    assert diff <= 1e-4, f"max abs difference to PyTorch {diff}"


def test_official_keys_are_ppvit_keys():
    """ppvit's ConvMixer is the official flat Sequential: its keys are the PyTorch ones up to BN's names."""
    torch_state, cfg, _, _ = load_fixture("convmixer_flat_gelu")
    cfg.pop("act")
    renamed = {k.replace("running_mean", "_mean").replace("running_var", "_variance")
               for k in torch_state if not k.endswith("num_batches_tracked")}
    model = ConvMixer(**cfg)
    assert set(model.state_dict()) == renamed
    assert model.head_names == (str(cfg["depth"] + 5),)


# (timm / the paper, with 1000 classes)
PARAMS = {"convmixer_1536_20": (51_625_960, 51.6), "convmixer_768_32": (21_110_248, 21.1),
          "convmixer_1024_20_ks9_p14": (24_383_464, 24.4), "convmixer_256_8": (848_616, 0.8)}


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_param_counts(name):
    exact, millions = PARAMS[name]
    with paddle.LazyGuard():  # shapes only, no memory
        model = ppvit.create_model(name, num_classes=1000)
    n = count_params(model, trainable_only=True)
    assert n == exact and round(n / 1e6, 1) == millions


def test_default_class_counts():
    with paddle.LazyGuard():
        # the CIFAR-10 model (locuslab/convmixer-cifar10 builds it with n_classes=10), the rest ImageNet
        assert ppvit.create_model("convmixer_256_8").num_classes == 10
        assert ppvit.create_model("convmixer_768_32").num_classes == 1000


def test_any_input_size():
    model = ConvMixer(dim=16, depth=2, kernel_size=5, patch_size=2, num_classes=3)
    model.eval()
    for h, w in [(32, 32), (40, 24), (7, 9)]:
        assert model(paddle.randn([2, 3, h, w])).shape == [2, 3]
    assert model.forward_features(paddle.randn([2, 3, 20, 20])).shape == [2, 16]


def test_train_step_with_drop_path():
    model = ConvMixer(dim=16, depth=3, kernel_size=5, patch_size=2, num_classes=5, drop_path_rate=0.5)
    model.train()
    x = paddle.randn([2, 3, 16, 16])
    # branches are dropped per sample, so passes differ
    first = model(x).numpy()
    assert any(not np.allclose(first, model(x).numpy()) for _ in range(5))
    loss = paddle.nn.functional.cross_entropy(model(x), paddle.to_tensor([1, 3]))
    loss.backward()
    for name, p in model.named_parameters():
        if not p.stop_gradient:
            assert p.grad is not None and np.isfinite(p.grad.numpy()).all(), name

    plain = ConvMixer(dim=16, depth=3, kernel_size=5, patch_size=2, num_classes=5)
    assert list(plain.state_dict()) == list(model.state_dict())
    plain.set_state_dict(model.state_dict())
    model.eval()
    plain.eval()
    np.testing.assert_allclose(model(x).numpy(), plain(x).numpy(), rtol=0, atol=1e-6)


def test_classifier_swap(tmp_path):
    model = ConvMixer(dim=16, depth=2, kernel_size=5, patch_size=2, num_classes=10)
    path = tmp_path / "w.pdparams"
    save_state(model.state_dict(), path)
    # another class count: the classifier ("7.*", from head_names) is left fresh, the rest loads
    other = ppvit.create_model("convmixer_256_8", pretrained=str(path), num_classes=3, dim=16, depth=2)
    assert other.state_dict()["7.weight"].shape == [16, 3]
    np.testing.assert_array_equal(other.state_dict()["3.0.fn.0.weight"].numpy(),
                                  model.state_dict()["3.0.fn.0.weight"].numpy())
    x = paddle.randn([2, 3, 8, 8])
    model.reset_classifier(4)
    assert model(x).shape == [2, 4] and model.get_classifier().weight.shape == [16, 4]
    assert list(model.state_dict())[-2:] == ["7.weight", "7.bias"]
    model.reset_classifier(0)
    assert model(x).shape == [2, 16]
