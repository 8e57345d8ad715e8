"""ppvit's C kernels (ppvit/kernels/csrc, built at first use) against Paddle's own ops, forward and gradients, and
what happens where they cannot be built."""
import itertools
import os
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from ppvit import kernels
from ppvit.kernels import native, normact
from ppvit.models.layers import LayerNorm2d

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RTOL = 1e-5


def assert_close(got, want, what, rtol=RTOL):
    err = float(np.abs(np.asarray(got) - np.asarray(want)).max()) / max(float(np.abs(want).max()), 1e-12)
    assert err <= rtol, f"{what}: relative error {err:.2e} > {rtol:.0e}"


def _grads(fn, inputs, seed=1):
    """fn(*tensors) with a fixed random upstream gradient: [output, input grads...] as numpy."""
    ts = [paddle.to_tensor(a, stop_gradient=False) for a in inputs]
    y = fn(*ts)
    g = np.random.default_rng(seed).standard_normal(y.shape).astype("float32")
    paddle.autograd.backward([y], [paddle.to_tensor(g)])
    return [y.numpy()] + [t.grad.numpy() for t in ts]


def _compare(kernel, reference, inputs, what):
    assert native.library() is not None, f"the C kernels did not build here: {native.why()}"
    got = _grads(kernel, inputs)
    with kernels.use_kernels(False):
        want = _grads(reference, inputs)
    names = ["output"] + [f"grad {i}" for i in range(len(inputs))]
    for name, a, b in zip(names, got, want):
        assert_close(a, b, f"{what} {name}")


@pytest.fixture(autouse=True)
def _kernels_on():
    with kernels.use_kernels(True):
        yield


def test_gelu_matches_paddle_on_its_whole_range():
    # tails, zero, and an odd length (the vector loops' remainders)
    x = np.concatenate([np.linspace(-12, 12, 1001), [0.0, -0.0, 1e-8, -1e-8, 40.0, -40.0]]).astype("float32")
    x = np.concatenate([x, np.random.default_rng(0).standard_normal(2 * 3 * 5 * 7).astype("float32")])
    _compare(lambda t: normact.gelu(t), lambda t: F.gelu(t), [x.reshape(1, -1)], "gelu")
    got = normact.gelu(paddle.to_tensor(x))  # no gradient wanted: the forward-only path
    assert_close(got.numpy(), F.gelu(paddle.to_tensor(x)).numpy(), "gelu forward only")


def test_gelu_treats_nan_and_infinity_as_paddle_does():
    x = paddle.to_tensor(np.array([np.nan, np.inf, -np.inf, 1.0], "float32"))
    got = normact.gelu(x).numpy()
    with kernels.use_kernels(False):
        want = F.gelu(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6, equal_nan=True)
    assert np.isnan(got[0]) and got[1] == np.inf


@pytest.mark.parametrize("shape", [(2, 5, 7), (3, 96), (2, 3, 4, 33)])
@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_last_axis_matches_paddle(shape, affine):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 1).astype("float32")
    C = shape[-1]
    if affine:
        w, b = rng.standard_normal(C).astype("float32"), rng.standard_normal(C).astype("float32")
        _compare(lambda t, wt, bt: normact.layer_norm(t, wt, bt, 1e-6),
                 lambda t, wt, bt: F.layer_norm(t, [C], wt, bt, 1e-6), [x, w, b], f"layer_norm {shape}")
    else:
        _compare(lambda t: normact.layer_norm(t, None, None, 1e-5),
                 lambda t: F.layer_norm(t, [C], None, None, 1e-5), [x], f"layer_norm {shape} no affine")


@pytest.mark.parametrize("shape", [(2, 7, 3, 5), (1, 16, 8, 8), (3, 5, 1, 1)])
def test_layer_norm_channels_first_matches_layernorm2d(shape):
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 2 - 1).astype("float32")
    C = shape[1]
    w, b = rng.standard_normal(C).astype("float32"), rng.standard_normal(C).astype("float32")

    def reference(t, wt, bt):  # LayerNorm2d's Paddle path: channels last, F.layer_norm, back
        return F.layer_norm(t.transpose([0, 2, 3, 1]), [C], wt, bt, 1e-6).transpose([0, 3, 1, 2])

    _compare(lambda t, wt, bt: normact.layer_norm(t, wt, bt, 1e-6, channels_first=True), reference, [x, w, b],
             f"layer_norm channels first {shape}")


def test_layernorm2d_layer_is_the_same_with_kernels_on_and_off():
    paddle.seed(0)
    layer = LayerNorm2d(6)
    layer.weight.set_value(paddle.linspace(0.5, 2.0, 6))
    layer.bias.set_value(paddle.linspace(-1.0, 1.0, 6))
    x = np.random.default_rng(2).standard_normal((2, 6, 5, 3)).astype("float32")
    _compare(lambda t: layer(t), lambda t: layer(t), [x], "LayerNorm2d")


@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_paddle(bias):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 7)).astype("float32")
    w = rng.standard_normal((7, 3)).astype("float32")
    if bias:
        b = rng.standard_normal(3).astype("float32")
        _compare(lambda t, wt, bt: normact.linear(t, wt, bt), lambda t, wt, bt: F.linear(t, wt, bt), [x, w, b],
                 "linear")
    else:
        _compare(lambda t, wt: normact.linear(t, wt), lambda t, wt: F.linear(t, wt), [x, w], "linear no bias")


@pytest.mark.parametrize("shared", [True, False])
def test_mix_heads_matches_the_broadcast_expression(shared):
    rng = np.random.default_rng(4)
    a = rng.random((2, 3, 5, 5)).astype("float32")
    q = rng.random((1 if shared else 2, 3, 5, 5)).astype("float32")
    w = rng.random(3).astype("float32")

    def reference(at, qt, wt):
        wt = wt.reshape([1, 3, 1, 1])
        return (1.0 - wt) * at + wt * qt

    _compare(lambda at, qt, wt: normact.mix_heads(at, qt, wt), reference, [a, q, w], f"mix_heads shared={shared}")


@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (3, 8, 33)], ids=str)
def test_channel_bias_matches_the_broadcast_sum(shape):
    rng = np.random.default_rng(4)
    x, b = rng.standard_normal(shape).astype("float32"), rng.standard_normal(shape[1]).astype("float32")
    ones = [1] * (len(shape) - 2)
    _compare(normact.add_channel_bias, lambda x, b: x + b.reshape([1, -1] + ones), [x, b], "channel bias")


def test_scale_channels_matches_the_broadcast_product():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 6, 5, 3)).astype("float32")
    gamma = rng.standard_normal(6).astype("float32")
    _compare(lambda t, g: normact.scale_channels(t, g), lambda t, g: g.reshape([1, -1, 1, 1]) * t, [x, gamma],
             "scale_channels")


@pytest.mark.parametrize("geometry", [(5, 6, 2, 3, 1, 3), (7, 5, 3, 2, 2, 3), (6, 6, 1, 4, 3, 3), (9, 7, 2, 2, 1, 5)],
                         ids=lambda g: "H{}W{}B{}heads{}dil{}k{}".format(*g))
def test_dilated_attention_matches_the_formulation_in_paddles_ops(geometry):
    """The C loop against models.dilateformer.dilate_attention in Paddle's ops (itself tested against the
    notebook's Unfold code in tests/test_dilateformer*.py), windows reaching past every border included."""
    from ppvit.models.dilateformer import dilate_attention
    H, W, B, heads, dilation, ks = geometry
    hd = 4
    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((H, W, B, heads * hd)).astype("float32") for _ in range(3))

    def run(qt, kt, vt):
        return dilate_attention(qt, kt, vt, hd, dilation, ks)

    assert_close(_grads(run, [q, k, v])[0], _grads(run, [q, k, v])[0], "deterministic")
    _compare(run, run, [q, k, v], f"dilated attention {geometry}")


def test_statistics_stay_float32_whatever_paddles_default_dtype():
    """The buffers the C loops write are float32 even when Paddle's default dtype is float64 (else a float64
    buffer holding float32 values would give silently wrong gradients)."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 6)).astype("float32")
    w, b = rng.standard_normal(6).astype("float32"), rng.standard_normal(6).astype("float32")
    previous = paddle.get_default_dtype()
    paddle.set_default_dtype("float64")
    try:
        _compare(lambda t, wt, bt: normact.layer_norm(t, wt, bt, 1e-6),
                 lambda t, wt, bt: F.layer_norm(t, [6], wt, bt, 1e-6), [x, w, b], "layer_norm, default float64")
    finally:
        paddle.set_default_dtype(previous)


def test_empty_inputs_take_paddles_ops():
    assert normact.gelu(paddle.zeros([0, 3])) is None


def test_kernels_off_or_static_return_none():
    x = paddle.ones([2, 3])
    with kernels.use_kernels(False):
        assert normact.gelu(x) is None
        assert normact.layer_norm(x, None, None, 1e-5) is None
        assert normact.linear(x, paddle.ones([3, 2])) is None
        assert kernels.permute(x, [1, 0]) is None


def _python(code, env):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600)


def test_without_a_compiler_the_layers_run_paddles_ops_after_one_warning(tmp_path):
    """No C compiler (an empty PATH, no CC): one RuntimeWarning naming the reason, then the same results."""
    env = dict(os.environ, PATH=str(tmp_path), CC="", PPVIT_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=ROOT)
    done = _python("""
        import warnings
        import numpy as np, paddle
        from ppvit.kernels import native
        from ppvit.models.layers import GELU, LayerNorm
        x = paddle.to_tensor(np.linspace(-3, 3, 12, dtype="float32").reshape(3, 4), stop_gradient=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            y = LayerNorm(4)(GELU()(x))
            y.sum().backward()
            GELU()(x)
        msgs = [str(w.message) for w in caught if "C kernels" in str(w.message)]
        print(len(msgs), msgs[0] if msgs else "")
        print(native.library() is None, float(y.abs().sum()))
    """, env)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.strip().splitlines()[-2:]
    assert first.startswith("1 ") and "no C compiler found" in first and "Paddle's own" in first, first
    assert second.startswith("True"), second
    assert not os.path.exists(tmp_path / "cache" / "kernels"), "nothing is built without a compiler"


def test_build_is_cached_and_an_unwritable_cache_builds_for_the_process(tmp_path):
    cache = tmp_path / "cache"
    env = dict(os.environ, PPVIT_CACHE_DIR=str(cache), PYTHONPATH=ROOT)
    code = "from ppvit.kernels import native; lib = native.library(); print(lib._name if lib else native.why())"
    first = _python(code, env)
    assert first.returncode == 0 and first.stdout.strip().startswith(str(cache / "kernels")), \
        first.stdout + first.stderr
    built = first.stdout.strip()
    mtime = os.path.getmtime(built)
    again = _python(code, env)
    assert again.stdout.strip() == built and os.path.getmtime(built) == mtime, "the cached build is reused"
    assert not [f for f in os.listdir(os.path.dirname(built)) if f.startswith(".build-")], "no temporary left"

    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    other = _python(code, dict(env, PPVIT_CACHE_DIR=str(blocked)))
    assert other.returncode == 0 and "ppvit-kernels-" in other.stdout, other.stdout + other.stderr


@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_training_matches_paddle_with_running_statistics(affine):
    """Outputs, gradients and the running mean/variance after two steps equal Paddle's BatchNorm2D's."""
    from ppvit.models.layers import BatchNorm2D
    rng = np.random.default_rng(6)
    xs = [(rng.standard_normal((3, 5, 4, 7)) * 2 + 1).astype("float32") for _ in range(2)]
    g = rng.standard_normal((3, 5, 4, 7)).astype("float32")
    kwargs = {} if affine else dict(weight_attr=False, bias_attr=False)
    results = []
    for on in (True, False):
        paddle.seed(0)
        bn = BatchNorm2D(5, momentum=0.8, **kwargs)
        if affine:
            bn.weight.set_value(paddle.linspace(0.5, 1.5, 5))
            bn.bias.set_value(paddle.linspace(-1.0, 1.0, 5))
        bn.train()
        out = []
        with kernels.use_kernels(on):
            for x in xs:
                xt = paddle.to_tensor(x, stop_gradient=False)
                y = bn(xt)
                paddle.autograd.backward([y], [paddle.to_tensor(g)])
                out += [y.numpy(), xt.grad.numpy()]
        out += [bn._mean.numpy(), bn._variance.numpy()]
        if affine:
            out += [bn.weight.grad.numpy(), bn.bias.grad.numpy()]
        results.append(out)
    for i, (a, b) in enumerate(zip(*results)):
        assert_close(a, b, f"batch_norm item {i}")


def test_batch_norm_kernel_stays_out_of_eval_and_global_statistics():
    from ppvit.models.layers import BatchNorm2D
    bn = BatchNorm2D(3)
    x = paddle.ones([2, 3, 2, 2])
    x.stop_gradient = False
    bn.eval()
    assert normact.batch_norm(bn, x) is None
    bn.train()
    assert normact.batch_norm(bn, x) is not None
    bn_global = BatchNorm2D(3, use_global_stats=True)
    bn_global.train()
    assert normact.batch_norm(bn_global, x) is None


# shapes for permute: odd sizes around the 8 x 8 register transpose and the 32 x 32 tiles, size-1 axes, 5-d
PERMUTE_SHAPES = [(3, 37, 45), (2, 9, 17, 5), (2, 3, 2, 4, 6), (5, 1, 33, 2), (40, 3), (1, 8, 8)]


@pytest.mark.parametrize("shape", PERMUTE_SHAPES, ids=str)
def test_permute_is_paddles_transpose_bit_for_bit(shape):
    """Every permutation, of a contiguous tensor and of a strided view (a reversed transpose): the values and the
    gradient (the inverse permutation of the upstream gradient) equal Paddle's transpose exactly, and the result
    is contiguous."""
    assert native.library() is not None, f"the C kernels did not build here: {native.why()}"
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shape).astype("float32")
    reverse = list(reversed(range(len(shape))))
    for perm in itertools.permutations(range(len(shape))):
        for view in (False, True):
            x = paddle.to_tensor(a, stop_gradient=False)
            src = x.transpose(reverse) if view else x
            y = kernels.permute(src, perm)
            assert y.is_contiguous()
            want = (a.transpose(reverse) if view else a).transpose(perm)
            assert np.array_equal(y.numpy(), want), (shape, perm, view)
            g = rng.standard_normal(want.shape).astype("float32")
            paddle.autograd.backward([y], [paddle.to_tensor(g)])
            with kernels.use_kernels(False):
                x2 = paddle.to_tensor(a, stop_gradient=False)
                ref = (x2.transpose(reverse) if view else x2).transpose(list(perm))
                paddle.autograd.backward([ref], [paddle.to_tensor(g)])
            assert np.array_equal(x.grad.numpy(), x2.grad.numpy()), (shape, perm, view)


def test_contiguous_copies_every_kind_of_view_exactly():
    """``kernels.strided.contiguous`` (the kernels' inputs and upstream gradients) on a slice, an unbind's part, a
    transpose of a slice and a size-1 axis: Paddle's values, contiguous; a contiguous tensor is returned as is."""
    from ppvit.kernels.strided import contiguous

    a = np.random.default_rng(1).standard_normal((4, 6, 3, 10)).astype("float32")
    x = paddle.to_tensor(a)
    views = {"slice": (x[:, 1:5], a[:, 1:5]), "unbind": (x.unbind(2)[1], a[:, :, 1]),
             "transposed slice": (x[:, :, :, 2:9].transpose([3, 0, 2, 1]), a[:, :, :, 2:9].transpose(3, 0, 2, 1)),
             "size-1 axis": (x[:, 2:3].transpose([1, 3, 0, 2]), a[:, 2:3].transpose(1, 3, 0, 2))}
    for what, (view, want) in views.items():
        assert not view.is_contiguous(), what
        got = contiguous(view)
        assert got.is_contiguous() and np.array_equal(got.numpy(), want), what
    assert contiguous(x) is x


def test_permute_refuses_what_is_not_a_permutation():
    with pytest.raises(ValueError, match="not a permutation"):
        kernels.permute(paddle.ones([2, 3]), [0, 0])


def test_kernels_take_strided_views_with_their_gradients():
    """Every kernel that copies a strided input to contiguous memory first (a transposed view, as attention and
    token layouts hand them) still returns that input's gradient: outputs and gradients as Paddle's ops."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((2, 4, 3, 5)).astype("float32")  # viewed as [2, 3, 4, 5] (channels 3)
    c3 = rng.standard_normal(3).astype("float32")
    c5 = rng.standard_normal(5).astype("float32")
    view = [0, 2, 1, 3]
    cases = {  # name: (kernel, reference), each f(view of x, per-channel parameter)
        "gelu": (lambda v, p: normact.gelu(v) * p.sum(), lambda v, p: F.gelu(v) * p.sum()),
        "layer_norm": (lambda v, p: normact.layer_norm(v, p, None, 1e-5),
                       lambda v, p: F.layer_norm(v, [5], p, None, 1e-5)),
        "channel_bias": (lambda v, p: normact.add_channel_bias(v, p), lambda v, p: v + p.reshape([1, 3, 1, 1])),
        "scale_channels": (lambda v, p: normact.scale_channels(v, p), lambda v, p: v * p.reshape([1, 3, 1, 1])),
        "permute": (lambda v, p: kernels.permute(v, [3, 1, 0, 2]) * p.sum(),
                    lambda v, p: v.transpose([3, 1, 0, 2]) * p.sum()),
    }
    for name, (kernel, reference) in cases.items():
        p = c5 if name == "layer_norm" else c3
        _compare(lambda x, w: kernel(x.transpose(view), w), lambda x, w: reference(x.transpose(view), w), [a, p],
                 f"{name} on a transposed view")


def test_channel_bias_gradient_is_not_shared_with_the_upstream_gradient():
    """The bias kernel's input gradient is a tensor of its own: Paddle adds a second branch's gradient for x into
    the first one it receives, in place, and the retained gradient of the output must not change with it."""
    b = paddle.to_tensor(np.arange(3, dtype="float32"), stop_gradient=False)
    a = paddle.to_tensor(np.ones((2, 3, 4), dtype="float32"), stop_gradient=False)
    x = a * 1
    y = normact.add_channel_bias(x, b)
    assert y is not None
    y.retain_grads()
    (y.sum() + (x * 3).sum()).backward()
    assert np.array_equal(y.grad.numpy(), np.ones((2, 3, 4), dtype="float32"))
    assert np.array_equal(a.grad.numpy(), np.full((2, 3, 4), 4, dtype="float32"))
    assert np.array_equal(b.grad.numpy(), np.full(3, 8, dtype="float32"))
