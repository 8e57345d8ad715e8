"""Fine-tuning at another resolution: position tables resampled as timm does (fixture made by
scripts/make_fixtures_resample.py with timm), the identity at the same size, and 224-px ConViT / CoAtNet
weights fine-tuned at 64 px."""
import logging
import os

import numpy as np
import paddle
import pytest

import ppvit
from ppvit.engine import load_config
from ppvit.engine.builder import build_model
from ppvit.io import CheckpointError, load_state
from ppvit.models.pos_embed import resample_abs_pos_embed, resize_rel_pos_bias_table

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "resample_timm.npz")
CONFIG = {
    "Global": {"device": "cpu", "epochs": 1},
    "Arch": {"name": "convit_tiny", "num_classes": 10},
    "Optimizer": {"name": "AdamW", "lr": 1e-3},
    "Data": {"dataset": "digits", "transform": "convit", "batch_size": 2, "eval_batch_size": 2},
}


def _cases(prefix):
    with np.load(FIXTURE) as f:
        names = sorted({k.split("/")[0] for k in f.files if k.startswith(prefix)})
    return names


@pytest.mark.parametrize("name", _cases("abs_"))
def test_abs_pos_embed_matches_timm(name):
    with np.load(FIXTURE) as f:
        case = {k.split("/", 1)[1]: f[k] for k in f.files if k.startswith(name + "/")}
    out = resample_abs_pos_embed(case["in"], tuple(case["new"]), old_size=tuple(case["old"]),
                                 num_prefix_tokens=int(case["prefix"]), interpolation=str(case["mode"]),
                                 antialias=bool(case["antialias"]))
    assert out.shape == case["out"].shape and out.dtype == np.float32
    np.testing.assert_allclose(out, case["out"], rtol=0, atol=5e-6)


@pytest.mark.parametrize("name", _cases("rel_"))
def test_rel_pos_bias_table_matches_timm(name):
    with np.load(FIXTURE) as f:
        table, new, expected = f[name + "/in"], tuple(f[name + "/new"]), f[name + "/out"]
    out = resize_rel_pos_bias_table(table, new, expected.shape)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=0, atol=5e-6)


def test_same_size_is_the_identity():
    x = np.random.RandomState(0).randn(1, 1 + 49, 4).astype(np.float32)
    assert resample_abs_pos_embed(x, (7, 7)) is x
    table = np.random.RandomState(1).randn(13 * 13, 2).astype(np.float32)
    assert resize_rel_pos_bias_table(table, (7, 7), table.shape) is table


def _checkpoint(tmp_path, name, **kwargs):
    """A 224-px model (random init) saved as a .pdparams: (path, its state as numpy)."""
    paddle.seed(0)
    model = ppvit.create_model(name, num_classes=10, **kwargs)
    path = os.path.join(tmp_path, f"{name}_224.pdparams")
    paddle.save(model.state_dict(), path)
    return path, load_state(path)


def _fine_tune(model, steps=2, size=64):
    """A couple of AdamW steps on random 2-image batches; returns the losses."""
    model.train()
    opt = paddle.optimizer.AdamW(1e-3, parameters=model.parameters())
    losses = []
    for i in range(steps):
        paddle.seed(i)
        x, y = paddle.randn([2, 3, size, size]), paddle.to_tensor([i % 10, (i + 3) % 10])
        loss = paddle.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(loss))
    return losses


@pytest.fixture
def ppvit_log(caplog):
    logger = logging.getLogger("ppvit")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="ppvit")
    yield caplog
    logger.removeHandler(caplog.handler)


def test_convit_224_weights_fine_tune_at_64px(tmp_path, ppvit_log):
    path, saved = _checkpoint(tmp_path, "convit_tiny")
    # the config route: Global.pretrained_model with Arch.img_size, through the engine's builder
    cfg = load_config(None, [f"Global.pretrained_model={path}", "Arch.img_size=64"], base=CONFIG)
    model = build_model(cfg, training=True, input_shape=(3, 64, 64))
    state = model.state_dict()
    assert list(state["pos_embed"].shape) == [1, 16, 192]  # 14x14 -> 4x4 patches
    np.testing.assert_allclose(state["pos_embed"].numpy(), resample_abs_pos_embed(saved["pos_embed"], (4, 4), num_prefix_tokens=0),
                               rtol=0, atol=1e-7)
    for k in saved:  # every other weight as saved
        if k != "pos_embed":
            np.testing.assert_array_equal(state[k].numpy(), saved[k])
    assert "pos_embed [1, 196, 192] -> [1, 16, 192]" in ppvit_log.text
    before = state["blocks.0.attn.qk.weight"].numpy().copy()
    losses = _fine_tune(model)
    assert all(np.isfinite(losses)) and not np.array_equal(before, model.state_dict()["blocks.0.attn.qk.weight"].numpy())
    # at the size it was saved for, nothing is resampled: the weights load as they are
    same = ppvit.create_model("convit_tiny", pretrained=path, num_classes=10)
    np.testing.assert_array_equal(same.state_dict()["pos_embed"].numpy(), saved["pos_embed"])


def test_coatnet_224_weights_fine_tune_at_64px(tmp_path, ppvit_log):
    path, saved = _checkpoint(tmp_path, "coatnet_0")
    for k in saved:  # 003's init leaves the tables at zero: give them values that show the resampling
        if k.endswith("relative_bias_table"):
            saved[k] = np.random.RandomState(len(k)).randn(*saved[k].shape).astype(np.float32)
    paddle.save({k: paddle.to_tensor(v) for k, v in saved.items()}, path)
    model = ppvit.create_model("coatnet_0", pretrained=path, num_classes=10, img_size=64)
    state = model.state_dict()
    # stage 3 attends over a 4x4 map (was 14x14), stage 4 over 2x2 (was 7x7)
    for key, window in (("s3.0.attn.relative_bias_table", (4, 4)), ("s4.1.attn.relative_bias_table", (2, 2))):
        expected = resize_rel_pos_bias_table(saved[key], window, ((2 * window[0] - 1) * (2 * window[1] - 1), 8))
        assert list(state[key].shape) == list(expected.shape)
        np.testing.assert_allclose(state[key].numpy(), expected, rtol=0, atol=1e-7)
    assert "5 tables (s3.0.attn.relative_bias_table, ...) [729, 8] -> [49, 8]" in ppvit_log.text
    assert "2 tables (s4.0.attn.relative_bias_table, ...) [169, 8] -> [9, 8]" in ppvit_log.text
    losses = _fine_tune(model)
    assert all(np.isfinite(losses))


def test_a_table_that_cannot_be_resampled_is_still_refused(tmp_path):
    small = dict(depth=2, local_up_to_layer=1)
    model = ppvit.create_model("convit_tiny", num_classes=10, img_size=32, **small)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    state["pos_embed"] = state["pos_embed"][:, :3]  # 3 patches: no square grid
    path = os.path.join(tmp_path, "odd.pdparams")
    paddle.save({k: paddle.to_tensor(v) for k, v in state.items()}, path)
    with pytest.raises(CheckpointError, match="pos_embed"):
        ppvit.create_model("convit_tiny", pretrained=path, num_classes=10, img_size=32, **small)
