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
