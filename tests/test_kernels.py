"""ppvit.kernels: one switch turns every kernel off (Paddle's own ops then run, with the same outputs and
gradients), and the model files hold the architecture only (no PyLayer, no graph-mode branch, no export path)."""
import os
import re

import numpy as np
import paddle
import pytest

import ppvit
from ppvit import kernels
from ppvit.kernels import config, depthwise, normact, pointwise, shift, strided
from ppvit.kernels import attention
from ppvit.models.dilateformer import dilate_attention, pad_hw

# a small Conv2Former: 1x1 convs, 11x11 and 3x3 depthwise convs, biases
SMALL = dict(depths=(1, 1, 1, 1), dims=(8, 16, 16, 16))
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_FILES = ["layers.py", "conv2former.py", "convit.py", "coatnet.py", "convmixer.py", "dilateformer.py"]
RTOL = 1e-5
KERNEL_NAMES = ("pointwise", "depthwise", "shift", "bias", "gelu", "layer_norm", "linear", "mix_heads",
                "scale_channels", "batch_norm", "dilated_attention", "permute", "channel_bias")
# a small ConViT: GPSA (the per-head mix) and MHSA blocks, LayerNorm, GELU, Linear
SMALL_CONVIT = dict(img_size=16, patch_size=4, embed_dim=4, num_heads=4, depth=2, local_up_to_layer=1)


def assert_close(got, want, what):
    # relative to the tensor's scale, with a floor: a gradient that is zero in exact arithmetic (ConViT's
    # pos_proj bias shifts every positional score of a head alike, which softmax ignores) holds rounding noise
    err = float(np.abs(np.asarray(got) - np.asarray(want)).max()) / max(float(np.abs(want).max()), 1e-4)
    assert err <= RTOL, f"{what}: relative error {err:.2e} > {RTOL:.0e}"


@pytest.mark.parametrize("name", MODEL_FILES)
def test_model_files_hold_the_architecture_only(name):
    with open(os.path.join(ROOT, "ppvit", "models", name), encoding="utf-8") as f:
        text = f.read()
    found = re.findall(r"PyLayer|in_dynamic_mode|in_dygraph_mode|\bjit\b|_C_ops|^\s*(?:from|import)\s+\S*deploy",
                       text, re.M)
    assert not found, f"ppvit/models/{name} mentions {sorted(set(found))}: kernels go to ppvit/kernels, export " \
                      f"rewrites to ppvit/deploy/rewrites.py"


@pytest.fixture
def calls(monkeypatch):
    """Counts of every kernel's entry into its own formulation (the PyLayers and the bias layout)."""
    counts = dict.fromkeys(KERNEL_NAMES, 0)

    def counting(key, fn):
        def wrapped(*args, **kwargs):
            counts[key] += 1
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(pointwise._PointwiseConv, "apply", counting("pointwise", pointwise._PointwiseConv.apply))
    monkeypatch.setattr(shift._Shift, "apply", counting("shift", shift._Shift.apply))
    monkeypatch.setattr(depthwise, "_FORMULATIONS",
                        {k: counting("depthwise", f) for k, f in depthwise._FORMULATIONS.items()})
    monkeypatch.setattr(depthwise, "_MIN_MACS", 0)  # small test inputs take the fast formulations
    monkeypatch.setattr(pointwise, "add_bias", counting("bias", pointwise.add_bias))
    monkeypatch.setattr(depthwise, "add_bias", pointwise.add_bias)
    for key, layer in (("gelu", normact._GELU), ("layer_norm", normact._LayerNorm), ("linear", normact._Linear),
                       ("mix_heads", normact._MixHeads), ("scale_channels", normact._ScaleChannels),
                       ("batch_norm", normact._BatchNorm), ("dilated_attention", attention._DilatedAttention),
                       ("permute", strided._Permute), ("channel_bias", normact._AddBias)):
        monkeypatch.setattr(layer, "apply", counting(key, layer.apply))
    return counts


def _run(models, x):
    return [v for model in models for v in _run_one(model, x)]


def _run_one(model, x):
    model.clear_gradients()
    xt = paddle.to_tensor(x, stop_gradient=False)
    y = model(xt)
    (y * paddle.linspace(-1, 1, y.shape[-1])).sum().backward()
    return [y.numpy(), xt.grad.numpy()] + [p.grad.numpy() for p in model.parameters() if p.grad is not None]


def _attention(q, k, v):
    # the C loop (dilated_attention), and the formulation in Paddle's ops that a given ``pad`` keeps (shift)
    return (dilate_attention(q, k, v, head_dim=4, dilation=2, kernel_size=3)
            + dilate_attention(q, k, v, head_dim=4, dilation=2, kernel_size=3, pad=pad_hw))


def _run_attention(qkv):
    q, k, v = (paddle.to_tensor(t, stop_gradient=False) for t in qkv)
    y = _attention(q, k, v)
    (y * y).sum().backward()
    return [y.numpy(), q.grad.numpy(), k.grad.numpy(), v.grad.numpy()]


@pytest.mark.parametrize("switch_off", ["set_enabled", "use_kernels", "env"])
def test_switch_turns_every_kernel_off_with_the_same_results(switch_off, calls, monkeypatch):
    """Kernels on: every kernel runs (1x1, depthwise, bias layout, shift, GELU, LayerNorm, Linear, per-head mix);
    off (each of the three ways): none of them, and outputs and gradients agree within 1e-5 (float32 rounding)."""
    monkeypatch.setattr(config, "_process", {"enabled": None})  # the environment is read again
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    paddle.seed(0)
    model = [ppvit.create_model("conv2former_n_cifar", **SMALL), ppvit.create_model("convit_tiny", **SMALL_CONVIT),
             ppvit.create_model("conv2former_n", img_size=32, **SMALL)]  # the official: layer scale, BatchNorm
    for m in model[:2]:
        m.eval()  # the notebook model has dropout
    model[2].train()  # BatchNorm on batch statistics (the official model has no dropout; no drop path is set)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 16, 16)).astype("float32")
    qkv = [rng.standard_normal((5, 6, 2, 4)).astype("float32") for _ in range(3)]

    assert kernels.is_enabled()
    on = _run(model, x), _run_attention(qkv)
    assert min(calls.values()) > 0, calls
    for key in calls:
        calls[key] = 0

    if switch_off == "set_enabled":
        monkeypatch.setattr(config, "_process", {"enabled": True})  # restored after the test
        kernels.set_enabled(False)
        off = _run(model, x), _run_attention(qkv)
    elif switch_off == "use_kernels":
        with kernels.use_kernels(False):
            assert not kernels.is_enabled()
            off = _run(model, x), _run_attention(qkv)
        assert kernels.is_enabled()
    else:
        monkeypatch.setenv(kernels.ENV_VAR, "0")
        monkeypatch.setattr(config, "_process", {"enabled": None})  # as in a process started with it
        off = _run(model, x), _run_attention(qkv)
    assert not kernels.is_enabled() or switch_off == "use_kernels"
    assert calls == dict.fromkeys(KERNEL_NAMES, 0), calls
    for i, (got, want) in enumerate(zip(on[0] + on[1], off[0] + off[1])):
        assert_close(got, want, f"kernels on vs off ({switch_off}) #{i} of {len(on[0])}+{len(on[1])} {np.shape(want)}")


def test_malformed_environment_switch_is_refused(monkeypatch):
    monkeypatch.setattr(config, "_process", {"enabled": None})
    monkeypatch.setenv(kernels.ENV_VAR, "maybe")
    with pytest.raises(ValueError, match=r"PPVIT_KERNELS='maybe' is not a switch: set PPVIT_KERNELS=1 .* or PPVIT_KERNELS=0"):
        kernels.is_enabled()


def test_static_graphs_never_run_the_kernels(calls, tmp_path):
    """Exported (static) programs hold Paddle's ops whatever the switch says: no kernel is entered while tracing."""
    paddle.seed(0)
    model = ppvit.create_model("conv2former_n_cifar", **SMALL)
    model.eval()
    paddle.jit.save(model, str(tmp_path / "m"), input_spec=[paddle.static.InputSpec([None, 3, 16, 16], "float32")])
    convit = ppvit.create_model("convit_tiny", **SMALL_CONVIT)
    convit.eval()
    paddle.jit.save(convit, str(tmp_path / "c"), input_spec=[paddle.static.InputSpec([None, 3, 16, 16], "float32")])
    assert calls == dict.fromkeys(KERNEL_NAMES, 0), calls
