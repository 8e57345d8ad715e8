"""Registry-wide checks: every name of the README's zoo is registered, every model trains, pretrained loading."""
import logging

import numpy as np
import paddle
import pytest

import ppvit
from ppvit.io import CheckpointError, save_state

DESIGN_NAMES = [
    "conv2former_n_cifar", "conv2former_n", "conv2former_t", "conv2former_s", "conv2former_b", "conv2former_l",
    "convit_tiny", "convit_small", "convit_base",
    "coatnet_0", "coatnet_1", "coatnet_2", "coatnet_3", "coatnet_4",
    "convmixer_1536_20", "convmixer_768_32", "convmixer_1024_20_ks9_p14", "convmixer_256_8",
    "dilateformer_t", "dilateformer_s", "dilateformer_b",
]

# Small inputs so CPU backward stays quick; fixed-size models are built for that size.
SMALL = {
    "conv2former": ({}, 32),
    "convit": ({"img_size": 32}, 32),
    "coatnet": ({"image_size": 32}, 32),
    "convmixer": ({}, 32),
    "dilateformer": ({"img_size": 32}, 32),
}


def test_every_design_name_is_registered():
    missing = sorted(set(DESIGN_NAMES) - set(ppvit.list_models()))
    assert not missing, f"not registered: {missing}"
    assert ppvit.list_models("convit_*") == ["convit_base", "convit_small", "convit_tiny"]


def test_unknown_model_names_close_matches():
    with pytest.raises(ValueError, match="did you mean.*convit_tiny|Did you mean.*convit_tiny"):
        ppvit.create_model("convit_tinny")


@pytest.mark.parametrize("name", DESIGN_NAMES)
def test_train_step_with_drop_path(name):
    family = name.split("_")[0]
    kwargs, size = SMALL[family]
    model = ppvit.create_model(name, num_classes=5, drop_path_rate=0.2, **kwargs)
    model.train()
    x = paddle.randn([2, 3, size, size])
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
    assert "missing keys: layers.3." in msg
    assert "unexpected keys: extra.weight" in msg
    assert "fc1.weight: checkpoint (64, 3, 3, 3) vs model (64, 3, 1, 1)" in msg
