"""Helpers for comparing ppvit models with reference implementations."""
import os

import numpy as np
import paddle

import ppvit


def assert_same_keys(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) or set(sa) == set(sb), (
        f"keys differ: only in reference {sorted(set(sa) - set(sb))[:10]}, "
        f"only in ppvit {sorted(set(sb) - set(sa))[:10]}")
    for k in sa:
        assert list(sa[k].shape) == list(sb[k].shape), f"{k}: {sa[k].shape} vs {sb[k].shape}"


def check_notebook_parity(ref_model, name, tmp_path, input_shape, atol=1e-5, **kwargs):
    """Save the notebook model's state_dict as a notebook would, load it with ``create_model`` and
    compare eval-mode outputs on a random input."""
    ref_model.eval()
    path = os.path.join(str(tmp_path), "best_model.pdparams")
    paddle.save(ref_model.state_dict(), path)
    model = ppvit.create_model(name, pretrained=path, **kwargs)
    model.eval()
    assert_same_keys(ref_model, model)
    x = paddle.randn(input_shape)
    with paddle.no_grad():
        want = ref_model(x).numpy()
        got = model(x).numpy()
    assert got.shape == want.shape
    diff = float(np.abs(got - want).max())
    assert diff <= atol, f"max abs difference {diff} > {atol}"
    return model


def count_params(model, trainable_only=False):
    """Parameter count. Paddle keeps BatchNorm running statistics as (non-trainable) parameters;
    ``trainable_only`` leaves them out, as PyTorch's and the papers' counts do."""
    return sum(int(np.prod(p.shape)) for p in model.parameters() if not (trainable_only and p.stop_gradient))


def assert_served_close(backend_name, out, ref, fp32_atol=1e-4):
    """Outputs of a ``Predictor`` are dygraph's within what its backend was verified to at export.

    ``backend: auto`` serves the fastest verified backend, which on a CPU with avx512_bf16/AMX may be
    ``paddle_bf16`` (which one depends on the machine's timing), so a test of ``auto`` must not assume fp32:
    fp32 backends are held to ``fp32_atol`` (absolute), reduced precision to ``BF16_TOLERANCE`` of the logits'
    scale, as ``ppvit.deploy.export.compare`` verifies it.
    """
    from ppvit.deploy.backends import REDUCED_PRECISION
    from ppvit.deploy.export import BF16_TOLERANCE

    diff = float(np.abs(np.asarray(out) - np.asarray(ref)).max())
    if backend_name in REDUCED_PRECISION:
        tol = BF16_TOLERANCE * max(1.0, float(np.abs(ref).max()))
    else:
        tol = fp32_atol
    assert np.isfinite(out).all() and diff <= tol, f"{backend_name}: max abs diff {diff:.3g} > {tol:.3g}"
