"""ConViT (source 002): checkpoint parity with the notebook model, sizes, input checks, training."""
import time

import numpy as np
import paddle
import pytest

import ppvit
from ppvit.models.convit import GPSA, relative_indices
from tests.conftest import fast_init
from tests.parity import check_notebook_parity, count_params
from tests.reference import nb002_convit as nb

# 4x4 patch grid, width 4 heads x 16, two GPSA blocks then one MHSA block (cls token joins at block 2)
SMALL = dict(img_size=32, patch_size=8, embed_dim=16, depth=3, local_up_to_layer=2)


def _randomize(model, scale=0.3):
    """Move every parameter away from its init (identity v, unit gates, local pos_proj) so the
    comparison exercises the gating and both attention paths with arbitrary weights."""
    with paddle.no_grad():
        for p in model.parameters():
            p.set_value(p + scale * paddle.randn(p.shape, dtype=p.dtype))
    return model


def test_registered():
    assert {"convit_tiny", "convit_small", "convit_base"} <= set(ppvit.list_models("convit_*"))


@pytest.mark.parametrize("name, millions", [("convit_tiny", 5.71), ("convit_small", 27.78),
                                            ("convit_base", 86.54)])
def test_param_count(name, millions):
    with fast_init():  # the weights' values do not matter here
        model = ppvit.create_model(name)
    n = count_params(model)
    assert round(n / 1e6, 2) == millions, n
    # the notebook's paddle.summary leaves out cls_token and pos_embed (README: 86,388,744 for base)
    if name == "convit_base":
        assert n == 86_540_040
        assert n - model.cls_token.size - model.pos_embed.size == 86_388_744


def test_param_count_matches_notebook_class():
    assert count_params(ppvit.create_model("convit_tiny")) == count_params(nb.convit_tiny())


@pytest.mark.parametrize("patch_size", [8, 16])
def test_notebook_parity_small(tmp_path, patch_size):
    kwargs = dict(SMALL, patch_size=patch_size, num_classes=10, locality_strength=2.0)
    ref = _randomize(nb.convit_tiny(**kwargs))
    model = check_notebook_parity(ref, "convit_tiny", tmp_path, (2, 3, 32, 32), **kwargs)
    kinds = [type(b.attn).__name__ for b in model.blocks]
    assert kinds == ["GPSA", "GPSA", "MHSA"]


def test_notebook_parity_fresh_init(tmp_path):
    # the notebook's own init (local_init etc.) saved as-is, with the default locality strength
    ref = nb.convit_tiny(**SMALL)
    check_notebook_parity(ref, "convit_tiny", tmp_path, (2, 3, 32, 32), **SMALL)


def test_notebook_parity_full_tiny(tmp_path):
    start = time.time()
    ref = _randomize(nb.convit_tiny(), scale=0.05)
    check_notebook_parity(ref, "convit_tiny", tmp_path, (1, 3, 224, 224))
    assert time.time() - start < 60  # a guard against the test silently becoming expensive


def test_init_matches_notebook():
    """Same init recipe: local_init makes v the identity and pos_proj the locality kernel."""
    paddle.seed(1)
    ref = nb.convit_tiny(**SMALL)
    model = ppvit.create_model("convit_tiny", **SMALL)
    for r, m in zip(ref.blocks[:2], model.blocks[:2]):
        np.testing.assert_array_equal(r.attn.v.weight.numpy(), m.attn.v.weight.numpy())
        np.testing.assert_array_equal(r.attn.pos_proj.weight.numpy(), m.attn.pos_proj.weight.numpy())
        np.testing.assert_array_equal(r.attn.gating_param.numpy(), m.attn.gating_param.numpy())


def test_rel_indices_is_a_non_persistent_buffer():
    model = ppvit.create_model("convit_tiny", **SMALL)
    ref = nb.convit_tiny(**SMALL)
    ref.eval()
    with paddle.no_grad():
        ref(paddle.randn([1, 3, 32, 32]))  # the notebook builds rel_indices lazily, in forward
    assert not any("rel_indices" in k for k in ref.state_dict())
    assert not any("rel_indices" in k for k in model.state_dict())
    buffers = dict(model.named_buffers())
    assert "blocks.0.attn.rel_indices" in buffers
    np.testing.assert_array_equal(buffers["blocks.0.attn.rel_indices"].numpy(),
                                  ref.blocks[0].attn.rel_indices.numpy())


def test_relative_indices_rectangular_grid():
    gh, gw = 2, 3
    rel = relative_indices((gh, gw)).numpy()[0]
    for n in range(gh * gw):
        for m in range(gh * gw):
            dx, dy = m % gw - n % gw, m // gw - n // gw
            assert rel[n, m].tolist() == [dx, dy, dx * dx + dy * dy]


def test_gpsa_matches_per_sample_formulation():
    """The broadcast positional score equals the notebook's per-sample one, in train mode too
    (gradients of pos_proj and gating_param included)."""
    dim, heads, grid = 32, 4, (4, 4)
    ours = GPSA(dim, heads, grid_size=grid)
    theirs = nb.GPSA(dim, heads)
    _randomize(ours)
    theirs.set_state_dict(ours.state_dict())
    x = paddle.randn([3, 16, dim])
    outs, grads = [], []
    for layer in (ours, theirs):
        layer.train()
        y = layer(x)
        (y * y).mean().backward()
        outs.append(y.numpy())
        grads.append({k: p.grad.numpy() for k, p in layer.named_parameters()})
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-5, rtol=0)
    for k in grads[1]:
        np.testing.assert_allclose(grads[0][k], grads[1][k], atol=1e-5, rtol=1e-4, err_msg=k)


def test_wrong_input_size_raises():
    model = ppvit.create_model("convit_tiny", **SMALL)
    with pytest.raises(ValueError, match=r"32x32.*48x40"):
        model(paddle.randn([1, 3, 48, 40]))


def test_api_surface():
    model = ppvit.create_model("convit_tiny", num_classes=7, **SMALL)
    model.eval()
    x = paddle.randn([2, 3, 32, 32])
    feats = model.forward_features(x)
    assert feats.shape == [2, 64]
    assert model(x).shape == [2, 7]
    names = dict(model.named_parameters())
    assert model.no_weight_decay() <= set(names)
    model.reset_classifier(3)
    assert model(x).shape == [2, 3]
    model.reset_classifier(0)
    assert model(x).shape == [2, 64]


def test_train_forward_backward_with_drop_path():
    model = ppvit.create_model("convit_tiny", num_classes=5, drop_path_rate=0.2, drop_rate=0.1,
                               attn_drop_rate=0.1, **SMALL)
    assert model.blocks[-1].drop_path.drop_prob == pytest.approx(0.2)
    model.train()
    x = paddle.randn([2, 3, 32, 32])
    loss = paddle.nn.functional.cross_entropy(model(x), paddle.to_tensor([1, 3]))
    loss.backward()
    assert np.isfinite(float(loss))
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert np.isfinite(p.grad.numpy()).all(), name
    # the parameters particular to ConViT do learn
    for name in ("cls_token", "pos_embed", "blocks.0.attn.gating_param", "blocks.0.attn.pos_proj.weight"):
        assert float(dict(model.named_parameters())[name].grad.abs().sum()) > 0, name
