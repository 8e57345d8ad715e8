"""DilateFormer (004): notebook checkpoint compatibility, the Unfold-free attention, training."""
import numpy as np
import paddle
import pytest

import ppvit
from ppvit.models.dilateformer import dilate_attention
from tests.parity import assert_same_keys, check_notebook_parity, count_params
from tests.reference import nb004_dilateformer as nb

NOTEBOOK_CFGS = {  # the notebook's "模型的参数" cell
    "dilateformer_t": dict(depths=[2, 2, 6, 2], embed_dim=72, num_heads=[3, 6, 12, 24]),
    "dilateformer_s": dict(depths=[3, 5, 8, 3], embed_dim=72, num_heads=[3, 6, 12, 24]),
    "dilateformer_b": dict(depths=[4, 8, 10, 3], embed_dim=96, num_heads=[3, 6, 12, 24]),
}


def _randomize(model, scale=0.05):
    """Perturb every parameter and BN statistic so that a mis-mapped key cannot hide behind the
    init's identities (LayerNorm 1/0, zero biases, BN mean 0 / var 1)."""
    state = {}
    for k, v in model.state_dict().items():
        a = v.numpy()
        if k.endswith("_variance"):
            a = 1.0 + 0.5 * np.random.rand(*a.shape)
        else:
            a = a + scale * np.random.randn(*a.shape)
        state[k] = paddle.to_tensor(a.astype("float32"))
    model.set_state_dict(state)
    return model


def test_registered():
    assert {"dilateformer_t", "dilateformer_s", "dilateformer_b"} <= set(ppvit.list_models("dilateformer_*"))


@pytest.mark.parametrize("name,millions", [("dilateformer_t", 17.2), ("dilateformer_s", 24.1),
                                           ("dilateformer_b", 47.4)])
def test_param_counts_and_notebook_keys(name, millions):
    with paddle.LazyGuard():  # shapes only, no memory
        model = ppvit.create_model(name)
        ref = nb.Dilateformer(num_classes=1000, **NOTEBOOK_CFGS[name])
    assert_same_keys(ref, model)
    assert count_params(model) == count_params(ref)
    assert round(count_params(model) / 1e6, 1) == millions


def test_notebook_checkpoint_loads_and_matches_t(tmp_path):
    # full DilateFormer-T widths and depths; 64x64 keeps CPU time low (stage maps 16, 8, 4, 2)
    ref = _randomize(nb.Dilateformer(img_size=64, num_classes=10, **NOTEBOOK_CFGS["dilateformer_t"]))
    model = check_notebook_parity(ref, "dilateformer_t", tmp_path, (2, 3, 64, 64), img_size=64,
                                  num_classes=10)
    assert model.num_classes == 10


def test_notebook_checkpoint_with_uneven_map_and_kernel_5(tmp_path):
    # odd feature maps (72 -> 18, 9, 5, 3) and a 5x5 window, at reduced width
    cfg = dict(depths=[1, 2, 1, 1], embed_dim=24, num_heads=[3, 6, 6, 6], kernel_size=5)
    ref = _randomize(nb.Dilateformer(img_size=72, num_classes=7, **cfg))
    check_notebook_parity(ref, "dilateformer_t", tmp_path, (2, 3, 72, 72), img_size=72, num_classes=7, **cfg)


def _unfold_reference(q, k, v, head_dim, dilation, kernel_size):
    """The notebook's DilateAttention (Unfold over K and V); q, k, v: B, d, H, W -> B, H, W, d."""
    return nb.DilateAttention(head_dim, kernel_size=kernel_size, dilation=dilation)(q, k, v)


@pytest.mark.parametrize("dilation,kernel_size,hw", [(1, 3, (7, 9)), (2, 3, (7, 9)), (3, 3, (5, 11)),
                                                     (2, 5, (9, 7))])
def test_dilate_attention_equals_unfold_formulation(dilation, kernel_size, hw):
    B, d, head_dim = 2, 12, 4  # 3 heads
    H, W = hw
    inputs = [paddle.randn([B, d, H, W]) for _ in range(3)]
    grad_out = paddle.randn([B, H, W, d])

    def run(fn):
        xs = [t.detach() for t in inputs]
        for t in xs:
            t.stop_gradient = False
        out = fn(*xs)  # B, H, W, d
        (out * grad_out).sum().backward()
        return [out.numpy()] + [t.grad.numpy() for t in xs]

    def ours(q, k, v):
        hw_b_d = [t.transpose([2, 3, 0, 1]) for t in (q, k, v)]  # H, W, B, d
        return dilate_attention(*hw_b_d, head_dim, dilation, kernel_size).transpose([2, 0, 1, 3])

    want = run(lambda q, k, v: _unfold_reference(q, k, v, head_dim, dilation, kernel_size))
    got = run(ours)
    for name, w, g in zip(("out", "dq", "dk", "dv"), want, got):
        assert g.shape == w.shape
        assert np.abs(g - w).max() <= 1e-5, f"{name}: max abs diff {np.abs(g - w).max()}"


def test_multi_dilate_attention_module_equals_notebook():
    from ppvit.models.dilateformer import MultiDilatelocalAttention

    ours = MultiDilatelocalAttention(36, num_heads=6, qkv_bias=True)
    ref = nb.MultiDilatelocalAttention(36, num_heads=6, qkv_bias=True)
    _randomize(ref, scale=0.2)
    ours.set_state_dict(ref.state_dict())
    x = paddle.randn([2, 9, 7, 36])  # B, H, W, C
    with paddle.no_grad():
        diff = np.abs(ours(x).numpy() - ref(x).numpy()).max()
    assert diff <= 1e-5


def test_trains_with_drop_path():
    """Forward + backward in train mode with stochastic depth: what the notebook's model cannot do on
    Paddle 3 (its in-place ``x[i] = ...`` breaks the backward pass)."""
    model = ppvit.create_model("dilateformer_t", img_size=64, num_classes=10, drop_path_rate=0.2)
    assert model.stages[-1].blocks[-1].drop_path.drop_prob == pytest.approx(0.2)
    model.train()
    x = paddle.randn([2, 3, 64, 64])
    loss = paddle.nn.functional.cross_entropy(model(x), paddle.to_tensor([1, 7]))
    loss.backward()
    for n, p in model.named_parameters():
        if not p.stop_gradient:
            assert p.grad is not None, n
            assert np.isfinite(p.grad.numpy()).all(), n
    # every attention's qkv weight learns, in every block of every stage (without stochastic depth, which
    # may drop a whole block for both samples)
    plain = ppvit.create_model("dilateformer_t", img_size=64, num_classes=10)
    plain.train()
    paddle.nn.functional.cross_entropy(plain(x), paddle.to_tensor([1, 7])).backward()
    qkv = [(n, p) for n, p in plain.named_parameters() if n.endswith("qkv.weight")]
    assert len(qkv) == sum(len(stage.blocks) for stage in plain.stages)
    for n, p in qkv:
        assert np.abs(p.grad.numpy()).max() > 0, n
    opt = paddle.optimizer.Adam(parameters=model.parameters(), learning_rate=1e-3)
    opt.step()


def test_input_size_is_checked():
    model = ppvit.create_model("dilateformer_t", img_size=64, num_classes=10)
    model.eval()
    with pytest.raises(ValueError, match="64x64.*32x32"):
        model(paddle.randn([1, 3, 32, 32]))
    free = ppvit.create_model("dilateformer_t", img_size=None, num_classes=10)
    free.eval()
    with paddle.no_grad():
        assert free(paddle.randn([1, 3, 32, 32])).shape == [1, 10]


def test_features_and_reset_classifier():
    model = ppvit.create_model("dilateformer_t", img_size=64)
    model.eval()
    with paddle.no_grad():
        feats = model.forward_features(paddle.randn([2, 3, 64, 64]))
    assert feats.shape == [2, model.num_features] and model.num_features == 576
    model.reset_classifier(5)
    with paddle.no_grad():
        assert model(paddle.randn([1, 3, 64, 64])).shape == [1, 5]
    assert model.no_weight_decay() == set()
