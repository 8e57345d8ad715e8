"""The interpretdl LIME backend against the real interpretdl package (not a stand-in).

interpretdl 0.8 cannot be installed next to ppvit's main requirements (see the recipe in docs/explain.md), so this
runs in CI's second venv (``.ci/interpretdl``) and is skipped elsewhere. ``PPVIT_REQUIRE_INTERPRETDL=1``
(set by that script) turns the skip into a failure, so CI cannot pass by skipping it.
"""
import os

import numpy as np
import paddle
import pytest

from ppvit.explain import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, LimeImageExplainer
from ppvit.explain import lime as ppvit_lime
# not `from tests.test_lime`: interpretdl installs a top-level `tests` package of its own, which shadows
# this folder (pytest puts tests/ itself on sys.path, so the module imports by its own name)
from test_lime import QUADRANT, block_image, fraction_in_top_left, texture_in_top_left

if os.environ.get("PPVIT_REQUIRE_INTERPRETDL", "") not in ("", "0"):
    import interpretdl  # noqa: F401  (an ImportError here fails the run, as it should)
else:
    interpretdl = pytest.importorskip(
        "interpretdl", reason="interpretdl is not installed (docs/explain.md's recipe; CI runs this in .ci/interpretdl)")


class TopLeftTexture(paddle.nn.Layer):
    """``texture_in_top_left`` (tests/test_lime.py) as a paddle model on ImageNet-normalised NCHW input,
    with logits whose softmax is exactly its two probabilities."""

    def forward(self, x):  # N, 3, H, W
        mean = paddle.to_tensor(np.reshape(IMAGENET_DEFAULT_MEAN, (1, 3, 1, 1)).astype("float32"))
        std = paddle.to_tensor(np.reshape(IMAGENET_DEFAULT_STD, (1, 3, 1, 1)).astype("float32"))
        q = ((x * std + mean) * 255.0)[:, :, :QUADRANT, :QUADRANT]
        tex = ((q[:, :, 1:, :] - q[:, :, :-1, :]).abs().mean(axis=[1, 2, 3])
               + (q[:, :, :, 1:] - q[:, :, :, :-1]).abs().mean(axis=[1, 2, 3])) / 2
        z = (tex - 6.0) / 2.0  # softmax([z/2, -z/2]) = [sigmoid(z), 1 - sigmoid(z)]
        return paddle.stack([z / 2, -z / 2], axis=1)


def test_paddle_model_is_the_planted_signal():
    images = np.stack([block_image(seed=s) for s in range(3)])
    x = (images / 255.0 - np.asarray(IMAGENET_DEFAULT_MEAN)) / np.asarray(IMAGENET_DEFAULT_STD)
    logits = TopLeftTexture()(paddle.to_tensor(x.transpose(0, 3, 1, 2).astype("float32"))).numpy()
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    np.testing.assert_allclose(probs, texture_in_top_left(images), atol=1e-4)


def test_interpretdl_backend_agrees_with_ppvit_on_the_planted_signal():
    model = TopLeftTexture()
    image = block_image()
    kwargs = dict(num_samples=300, batch_size=50, visual=False)

    real = LimeImageExplainer(model, backend="interpretdl", random_seed=0, device="cpu")
    w_idl = real.interpret(image, **kwargs)
    # interpretdl segments with quickshift(image, sigma=1) and scikit-image's default seed (42)
    own = LimeImageExplainer(model, random_seed=0, progress=False,
                             quickshift_kwargs=dict(ppvit_lime.QUICKSHIFT_INTERPRETDL,
                                                    **{ppvit_lime._QUICKSHIFT_SEED_ARG: 42}))
    w_own = own.interpret(image, **kwargs)

    segments = real.lime_results["segmentation"]
    _, relabelled = np.unique(segments, return_inverse=True)  # ppvit numbers superpixels 0..n-1
    np.testing.assert_array_equal(relabelled.reshape(segments.shape), own.lime_results["segmentation"])
    assert set(w_idl) == set(w_own) == {0}  # both explain the predicted class
    assert real.lime_results["probability"][0] == pytest.approx(own.lime_results["probability"][0], abs=1e-5)

    # the same superpixels come out on top (the samples differ, numpy RandomState vs Generator, so the order
    # among the four near-equal quadrant superpixels of this image may too): the strong positive ones are the
    # same set, all in the planted quadrant, with weights that agree within the sampling noise
    def strong(weights):
        top = weights[0][1]
        return {sp for sp, w in weights if w > 0.5 * top}

    assert w_idl[0][0][1] > 0 and w_own[0][0][1] > 0
    assert strong(w_idl[0]) == strong(w_own[0])
    assert len(strong(w_own[0])) >= 3
    assert all(fraction_in_top_left(own.lime_results["segmentation"], sp) > 0.9 for sp in strong(w_own[0]))
    d_idl, d_own = dict(w_idl[0]), dict(w_own[0])
    for sp in strong(w_own[0]):
        assert d_idl[sp] == pytest.approx(d_own[sp], abs=0.05)
    # and the weak rest is weak in both
    assert max(abs(w) for sp, w in w_idl[0] if sp not in strong(w_own[0])) < 0.05
