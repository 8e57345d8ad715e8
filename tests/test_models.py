"""Registry-wide checks: every name of the README's zoo is registered, every model trains, pretrained loading."""
import logging

import numpy as np
import paddle
import pytest

import ppvit
from ppvit.io import CheckpointError, save_state
from tests.conftest import fast_init

DESIGN_NAMES = [
    "conv2former_n_cifar", "conv2former_n", "conv2former_t", "conv2former_s", "conv2former_b", "conv2former_l",
    "convit_tiny", "convit_small", "convit_base",
    "coatnet_0", "coatnet_1", "coatnet_2", "coatnet_3", "coatnet_4",
    "convmixer_1536_20", "convmixer_768_32", "convmixer_1024_20_ks9_p14", "convmixer_256_8",
    "dilateformer_t", "dilateformer_s", "dilateformer_b",
]

# Small inputs so CPU backward stays quick: fixed-size models (their cfg says so) are built for that size,
# the others take it as it is.
SMALL_SIZE = 32


def _small_kwargs(name):
    return {"img_size": SMALL_SIZE} if ppvit.get_model_cfg(name).fixed_input_size else {}


def test_every_design_name_is_registered():
    missing = sorted(set(DESIGN_NAMES) - set(ppvit.list_models()))
    assert not missing, f"not registered: {missing}"
    assert ppvit.list_models("convit_*") == ["convit_base", "convit_small", "convit_tiny"]


def test_unknown_model_names_close_matches():
    with pytest.raises(ValueError, match="did you mean.*convit_tiny|Did you mean.*convit_tiny"):
        ppvit.create_model("convit_tinny")


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_train_step_with_drop_path(name):
    model = ppvit.create_model(name, num_classes=5, drop_path_rate=0.2, **_small_kwargs(name))
    model.train()
    x = paddle.randn([2, 3, SMALL_SIZE, SMALL_SIZE])
    logits = model(x)
    assert logits.shape == [2, 5]
    feats = model.forward_features(x)
    assert feats.ndim == 2 and feats.shape[0] == 2
    loss = paddle.nn.functional.cross_entropy(logits, paddle.to_tensor([1, 3]))
    loss.backward()
    grads = [p.grad for p in model.parameters() if not p.stop_gradient]
    assert all(g is not None for g in grads), "some parameters got no gradient"
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    # the stem and the head both learn
    assert np.abs(grads[0].numpy()).sum() > 0 and np.abs(grads[-1].numpy()).sum() > 0


@pytest.mark.parametrize("ext", [".pdparams", ".safetensors"])
def test_pretrained_round_trip(tmp_path, ext):
    src = ppvit.create_model("conv2former_n_cifar")
    path = tmp_path / f"w{ext}"
    save_state(src.state_dict(), path)
    dst = ppvit.create_model("conv2former_n_cifar", pretrained=str(path))
    for k, v in src.state_dict().items():
        np.testing.assert_array_equal(dst.state_dict()[k].numpy(), v.numpy())


def test_pretrained_other_class_count_reinitialises_head(tmp_path, caplog):
    src = ppvit.create_model("conv2former_n_cifar", num_classes=10)
    path = tmp_path / "w.pdparams"
    save_state(src.state_dict(), path)
    fresh = ppvit.create_model("conv2former_n_cifar", num_classes=7)
    with caplog.at_level(logging.INFO, logger="ppvit"):
        dst = ppvit.create_model("conv2former_n_cifar", pretrained=str(path), num_classes=7)
    assert "re-initialised" in caplog.text and "head.weight" in caplog.text
    assert dst.state_dict()["head.weight"].shape == [512, 7]
    for k, v in src.state_dict().items():
        if not k.startswith("head."):
            np.testing.assert_array_equal(dst.state_dict()[k].numpy(), v.numpy())
    assert fresh.state_dict()["head.weight"].shape == dst.state_dict()["head.weight"].shape


def test_pretrained_mismatch_lists_keys(tmp_path):
    src = ppvit.create_model("conv2former_n_cifar").state_dict()
    state = {k: v for k, v in src.items() if not k.startswith("layers.3.")}
    state["extra.weight"] = paddle.zeros([3])
    state["fc1.weight"] = paddle.zeros([64, 3, 3, 3])
    path = tmp_path / "bad.pdparams"
    save_state(state, path)
    with pytest.raises(CheckpointError) as err:
        ppvit.create_model("conv2former_n_cifar", pretrained=str(path))
    msg = str(err.value)
    assert "does not hold conv2former_n_cifar weights for these arguments: " in msg
    assert "model keys missing, 1 of another shape, 1 unexpected (e.g. missing layers.3." in msg
    assert "unexpected extra.weight" in msg
    assert "fc1.weight: checkpoint (64, 3, 3, 3) vs model (64, 3, 1, 1)" in msg


# ---------------------------------------------------------------------------------------------------------
# the model contract (timm's) and the metadata of every registered name
# ---------------------------------------------------------------------------------------------------------
CONTRACT_METHODS = ("forward_features", "forward_head", "get_classifier", "reset_classifier", "no_weight_decay")
TIMM_ARGS = ("img_size", "in_chans", "num_classes", "drop_rate", "drop_path_rate")


def test_cfg_api_attributes_and_keys():
    cfg = ppvit.get_model_cfg("conv2former_n_cifar")
    assert cfg is ppvit.models.get_model_cfg("conv2former_n_cifar")
    assert cfg.input_size == cfg["input_size"] == (3, 32, 32)
    d = cfg.to_dict()
    assert dict(cfg) == d and "checkpoint_filter_fn" not in d
    for key in ("input_size", "fixed_input_size", "mean", "std", "interpolation", "crop_pct", "num_classes",
                "classifier", "first_conv", "source", "paper", "architecture"):
        assert key in d
    assert d["architecture"] == "conv2former_n_cifar"
    from ppvit.data import mean_std

    # every registered cfg normalises as ppvit's data pipelines train (an export from Python reads the cfg)
    for name in ppvit.list_models():
        other = ppvit.get_model_cfg(name)
        assert (other.mean, other.std) == tuple(mean_std("basic")), name
    with pytest.raises(ValueError, match="Did you mean.*convit_tiny"):
        ppvit.get_model_cfg("convit_tinny")


def test_registering_without_cfg_is_refused():
    with pytest.raises(TypeError, match="cfg=ModelCfg"):
        ppvit.register_model(lambda **kw: None)


@pytest.mark.parametrize("pretrained", [True, 1, {"w": 1}])
def test_pretrained_true_is_a_clear_error(pretrained):
    with pytest.raises(ValueError, match=r"\.pdparams or \.safetensors.*downloads no weights"):
        ppvit.create_model("convmixer_256_8", pretrained=pretrained)


def test_old_argument_spellings_are_accepted_once():
    model = ppvit.create_model("coatnet_0", image_size=32, in_channels=1, num_blocks=[1, 1, 1, 1, 1],
                               channels=[8, 8, 8, 8, 8])
    assert model.img_size == (32, 32) and model.pretrained_cfg["input_size"] == (1, 32, 32)
    assert model(paddle.randn([1, 1, 32, 32])).shape == [1, 1000]
    with pytest.raises(TypeError, match="both image_size= and img_size="):
        ppvit.create_model("coatnet_0", image_size=32, img_size=32)


@pytest.mark.parametrize("name", ["convit_tiny", "coatnet_0", "dilateformer_t"])
def test_fixed_size_models_name_both_sizes_and_both_fixes(name):
    kwargs = dict(img_size=64, num_classes=3)
    if name == "coatnet_0":
        kwargs.update(num_blocks=[1, 1, 1, 1, 1], channels=[8, 8, 8, 8, 8])
    model = ppvit.create_model(name, **kwargs)
    with pytest.raises(ValueError) as err:
        model(paddle.randn([1, 3, 32, 32]))
    msg = str(err.value)
    assert "64x64" in msg and "32x32" in msg
    assert "img_size=32" in msg and "-o Arch.img_size=32" in msg


@pytest.mark.parametrize("name", ppvit.list_models())
def test_model_contract_and_cfg(name):
    """Each registered name, built once at its defaults: the timm surface exists and behaves, and its cfg
    describes the built model (class count, input size, classifier and first conv)."""
    import inspect

    cfg = ppvit.get_model_cfg(name)
    with fast_init():  # the full-size weights' values do not matter here
        model = ppvit.create_model(name)
    model.eval()
    assert model.num_classes == cfg.num_classes
    assert model.pretrained_cfg == cfg.to_dict()  # built at the defaults: nothing differs
    for method in CONTRACT_METHODS:
        assert callable(getattr(model, method, None)), f"{name} has no {method}()"
    params = inspect.signature(type(model).__init__).parameters
    missing = [a for a in TIMM_ARGS if a not in params]
    assert not missing, f"{name}'s constructor lacks {missing}"
    assert inspect.signature(model.forward_head).parameters["pre_logits"].default is False
    # timm's older cfg name and feature levels on every model (the maps themselves: test_features.py)
    assert model.default_cfg is model.pretrained_cfg
    sublayers = dict(model.named_sublayers())
    assert model.feature_info and all(isinstance(f["num_chs"], int) and f["num_chs"] > 0 and f["reduction"] >= 1
                                      and f["module"] in sublayers for f in model.feature_info), model.feature_info

    state = model.state_dict()
    # cfg.classifier is the Linear get_classifier() returns; its keys are in the state_dict
    head = model.get_classifier()
    assert isinstance(head, paddle.nn.Linear)
    assert state[cfg.classifier + ".weight"].name == head.weight.name
    assert list(head.weight.shape) == [model.num_features, cfg.num_classes]
    # first_conv names a real conv on the image channels
    first = state[cfg.first_conv + ".weight"]
    assert first.ndim == 4 and first.shape[1] == cfg.input_size[0]
    assert isinstance(model.no_weight_decay(), set)
    assert model.no_weight_decay() <= set(dict(model.named_parameters()))

    # the input size: a fixed-size model is built for exactly the cfg's; the others run at a small one
    # (a full-size forward is slow here: a fixed-size model's real forward_features runs on the same
    # architecture built for a small size)
    runner = model
    if cfg.fixed_input_size:
        assert tuple(model.img_size) == tuple(cfg.input_size[1:])
        runner = ppvit.create_model(name, img_size=SMALL_SIZE)
        runner.eval()
        assert runner.num_features == model.num_features
    with paddle.no_grad():
        feats = runner.forward_features(paddle.randn([2, cfg.input_size[0], SMALL_SIZE, SMALL_SIZE]))
    assert list(feats.shape) == [2, model.num_features]
    with paddle.no_grad():
        assert list(model.forward_head(feats, pre_logits=True).shape) == [2, model.num_features]
        assert list(model.forward_head(feats).shape) == [2, cfg.num_classes]
        model.reset_classifier(7)
        assert model.num_classes == 7 and list(model.forward_head(feats).shape) == [2, 7]
        assert model.get_classifier().weight.shape == [model.num_features, 7]
        model.reset_classifier(0)
        assert list(model.forward_head(feats).shape) == [2, model.num_features]
