"""LIME (ppvit.explain): determinism, a planted-signal model, the algorithm's pieces, figures, adapters."""
import sys
import types

import numpy as np
import paddle
import pytest

from ppvit.explain import (
    IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, LimeImageExplainer, explanation_mask, load_image, paddle_predict_fn,
    predictor_predict_fn, restore_image, save_lime_figure,
)

SIZE = 48
QUADRANT = SIZE // 2


def block_image(seed=0, size=SIZE, blocks=4, noise=12.0):
    """Blocks of distinct colours with a noisy texture: quickshift cuts it along the blocks."""
    rng = np.random.default_rng(seed)
    b = size // blocks
    colours = rng.integers(30, 226, size=(blocks, blocks, 3))
    img = np.repeat(np.repeat(colours, b, axis=0), b, axis=1).astype(np.float64)
    return np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8)


def texture_in_top_left(images):
    """Planted signal: class 0 = 'the top-left quadrant is textured'. Nothing else in the image matters.

    LIME fills switched-off superpixels with their mean colour, which keeps a region's mean but erases its
    texture, so the signal is the mean absolute difference between neighbouring pixels.
    """
    q = np.asarray(images, np.float64)[:, :QUADRANT, :QUADRANT]
    tex = (np.abs(np.diff(q, axis=1)).mean(axis=(1, 2, 3)) + np.abs(np.diff(q, axis=2)).mean(axis=(1, 2, 3))) / 2
    p = 1.0 / (1.0 + np.exp(-(tex - 6.0) / 2.0))
    return np.stack([p, 1.0 - p], axis=1)


def fraction_in_top_left(segments, segment_id):
    region = segments == segment_id
    return region[:QUADRANT, :QUADRANT].sum() / region.sum()


def explain(predict_fn=texture_in_top_left, image=None, seed=0, num_samples=150, **kwargs):
    explainer = LimeImageExplainer(predict_fn, random_seed=seed, progress=False, **kwargs)
    weights = explainer.interpret(block_image() if image is None else image, num_samples=num_samples,
                                  batch_size=64, visual=False)
    return explainer, weights


# ----------------------------------------------------------------------------------------------- seeds
def test_same_seed_gives_identical_weights_and_overlay(tmp_path):
    a, wa = explain(seed=3)
    b, wb = explain(seed=3)
    assert wa == wb
    np.testing.assert_array_equal(a.lime_results["segmentation"], b.lime_results["segmentation"])
    np.testing.assert_array_equal(a.explanation(), b.explanation())
    a.interpret(block_image(), num_samples=100, visual=False, save_path=tmp_path / "a.png")
    b.interpret(block_image(), num_samples=100, visual=False, save_path=tmp_path / "b.png")
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_different_seed_gives_different_samples():
    a, wa = explain(seed=1)
    b, wb = explain(seed=2)
    assert a.lime_results["samples"].shape == b.lime_results["samples"].shape
    assert (a.lime_results["samples"] != b.lime_results["samples"]).mean() > 0.3
    assert wa != wb


# ----------------------------------------------------------------------------------------------- planted signal
def test_top_superpixel_lies_in_the_planted_region():
    explainer, weights = explain(num_samples=200)
    res = explainer.lime_results
    assert list(weights) == [0]  # the predicted class
    assert res["probability"][0] > 0.9
    segments = res["segmentation"]
    top_id, top_w = weights[0][0]
    assert top_w > 0
    assert fraction_in_top_left(segments, top_id) > 0.9
    # every clearly positive superpixel is a top-left one, and the overlay covers the quadrant (it may also
    # catch small noise superpixels elsewhere: interpretdl highlights every positive one in the top 20 %)
    strong = [sp for sp, w in weights[0] if w > 0.5 * top_w]
    assert len(strong) >= 3 and all(fraction_in_top_left(segments, sp) > 0.9 for sp in strong)
    mask = explanation_mask(segments, weights[0])
    assert mask[:QUADRANT, :QUADRANT].mean() > 0.8


class TopLeftMean(paddle.nn.Layer):
    """A tiny paddle model that only looks at the mean of the top-left quadrant."""

    def forward(self, x):  # x: N, 3, H, W normalised
        m = x[:, :, : x.shape[2] // 2, : x.shape[3] // 2].mean(axis=[1, 2, 3])
        return paddle.stack([4.0 * m, -4.0 * m], axis=1)


def test_paddle_model_planted_signal_with_black_fill():
    img = block_image(seed=5, size=32)
    img[:16, :16] = np.clip(img[:16, :16].astype(int) + 80, 0, 255)  # a bright top-left
    explainer = LimeImageExplainer(TopLeftMean(), random_seed=0, hide_color=0, progress=False)
    weights = explainer.interpret(img, num_samples=120, batch_size=40, visual=False)
    (cls,) = weights
    assert cls == 0
    segments = explainer.lime_results["segmentation"]
    region = segments == weights[0][0][0]
    assert region[:16, :16].sum() / region.sum() > 0.9
    assert weights[0][0][1] > 0


# ----------------------------------------------------------------------------------------------- the algorithm
def test_linear_model_recovers_exact_superpixel_contributions():
    """With a black fill and a model linear in the pixels, LIME's (unregularised) fit is exact."""
    img = block_image(seed=1)
    weight_map = np.random.default_rng(0).normal(size=img.shape)

    def linear(images):
        s = (np.asarray(images, np.float64) * weight_map).sum(axis=(1, 2, 3)) / 1e4
        return np.stack([s, -s], axis=1)

    explainer, weights = explain(linear, image=img, hide_color=0, num_samples=300)
    segments = explainer.lime_results["segmentation"]
    expected = {sp: float((img * weight_map)[segments == sp].sum() / 1e4) for sp in np.unique(segments)}
    (cls,) = weights
    sign = 1.0 if cls == 0 else -1.0
    got = dict(weights[cls])
    assert set(got) == set(expected)
    np.testing.assert_allclose([got[k] for k in expected], [sign * v for v in expected.values()], atol=1e-8)
    assert explainer.lime_results["r2_scores"][cls] == pytest.approx(1.0)
    # sorted by |weight|, as interpretdl returns them
    assert [abs(w) for _, w in weights[cls]] == sorted((abs(w) for _, w in weights[cls]), reverse=True)


def test_perturbed_images_fill_off_superpixels_with_their_mean():
    img = block_image(seed=2)
    seen = []

    def recording(images):
        seen.append(np.array(images))
        return texture_in_top_left(images)

    explainer, _ = explain(recording, image=img, num_samples=20)
    res = explainer.lime_results
    batch = np.concatenate(seen)  # every call is a batch of samples (the unperturbed image is sample 0)
    segments, samples = res["segmentation"], res["samples"]
    assert batch.shape == (20, SIZE, SIZE, 3) and batch.dtype == np.uint8
    assert samples[0].all()
    np.testing.assert_array_equal(batch[0], img)
    for i in (1, 7, 19):
        for sp in range(samples.shape[1]):
            pixels = batch[i][segments == sp]
            if samples[i, sp]:
                np.testing.assert_array_equal(pixels, img[segments == sp])
            else:
                mean = img[segments == sp].mean(axis=0).astype(np.uint8)
                np.testing.assert_array_equal(pixels, np.broadcast_to(mean, pixels.shape))


def test_kernel_weights_are_the_cosine_kernel():
    explainer, _ = explain(num_samples=50)
    res = explainer.lime_results
    samples = res["samples"]
    # cosine distance of a 0/1 mask with k ones to the all-ones mask of n: 1 - sqrt(k / n)
    d = 1.0 - np.sqrt(samples.sum(axis=1) / samples.shape[1])
    np.testing.assert_allclose(res["kernel_weights"], np.sqrt(np.exp(-d ** 2 / 0.25 ** 2)), atol=1e-12)
    assert res["kernel_weights"][0] == pytest.approx(1.0)


def test_top_k_and_explicit_classes():
    def three_classes(images):
        p = texture_in_top_left(images)[:, :1]
        return np.concatenate([p * 0.6, p * 0.3 + 0.05, 1 - 0.9 * p - 0.05], axis=1)

    explainer, weights = explain(three_classes, num_samples=60)
    assert list(weights) == [0]
    w = explainer.interpret(block_image(), top_k=2, num_samples=60, visual=False)
    assert list(w) == [0, 1]  # most probable first
    w = explainer.interpret(block_image(), interpret_class=[2, 1], num_samples=60, visual=False)
    assert list(w) == [2, 1] and set(explainer.lime_results["probability"]) == {1, 2}
    w = explainer.interpret(block_image(), interpret_class=np.int64(1), num_samples=60, visual=False)
    assert list(w) == [1]


# ----------------------------------------------------------------------------------------------- inputs
def test_normalised_chw_input_is_restored():
    img = block_image(seed=4, size=32)
    chw = ((img / 255.0 - np.array(IMAGENET_DEFAULT_MEAN)) / np.array(IMAGENET_DEFAULT_STD)).transpose(2, 0, 1).astype(np.float32)
    np.testing.assert_array_equal(restore_image(chw), img)
    a = LimeImageExplainer(texture_in_top_left, random_seed=0, progress=False)
    b = LimeImageExplainer(texture_in_top_left, random_seed=0, progress=False)
    assert a.interpret(paddle.to_tensor(chw), num_samples=30, visual=False) == \
        b.interpret(img, num_samples=30, visual=False)


def test_image_file_is_resized_and_cropped(tmp_path):
    import cv2

    path = tmp_path / "img.png"
    cv2.imwrite(str(path), np.zeros((40, 60, 3), np.uint8))
    assert load_image(str(path), resize_to=20).shape == (20, 30, 3)
    assert load_image(str(path), resize_to=20, crop_to=16).shape == (16, 16, 3)
    explainer = LimeImageExplainer(texture_in_top_left, random_seed=0, progress=False)
    explainer.interpret(str(path), num_samples=10, resize_to=SIZE, crop_to=SIZE, visual=False)
    assert explainer.lime_results["input"].shape == (SIZE, SIZE, 3)
    bad = tmp_path / "notes.txt"
    bad.write_text("not an image")
    with pytest.raises(ValueError, match="cannot read .* as an image"):
        explainer.interpret(str(bad), num_samples=10, visual=False)


# ----------------------------------------------------------------------------------------------- adapters
def test_predictor_adapter_feeds_normalised_nchw_and_returns_softmax():
    received = []

    def predictor(x):
        received.append(x)
        return np.stack([x.mean(axis=(1, 2, 3)), np.zeros(len(x))], axis=1)

    fn = predictor_predict_fn(predictor)
    images = np.stack([block_image(seed=s, size=16) for s in range(3)])
    probs = fn(images)
    x = received[0]
    assert x.dtype == np.float32 and x.shape == (3, 3, 16, 16)
    expected = ((images / 255.0 - np.array(IMAGENET_DEFAULT_MEAN)) / np.array(IMAGENET_DEFAULT_STD)).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(x, expected, atol=1e-5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    logits = np.stack([expected.mean(axis=(1, 2, 3)), np.zeros(3)], axis=1)
    np.testing.assert_allclose(probs, np.exp(logits) / np.exp(logits).sum(1, keepdims=True), atol=1e-5)


class _BatchedPredictor:
    """A predictor with its own batch size that records the batches it gets (texture-in-top-left logits)."""

    batch_size = 48

    def __init__(self):
        self.sizes = []

    def __call__(self, x):
        self.sizes.append(len(x))
        images = (x.transpose(0, 2, 3, 1) * np.array(IMAGENET_DEFAULT_STD) + np.array(IMAGENET_DEFAULT_MEAN)) * 255.0
        return np.log(texture_in_top_left(images))


def test_lime_feeds_the_predictor_its_batch_size_and_overlapping_gives_the_same_result():
    """predictor_predict_fn lets LIME build batch i+1 while batch i runs; the explanation must not change."""
    predictor = _BatchedPredictor()
    fn = predictor_predict_fn(predictor)
    a = LimeImageExplainer(fn, random_seed=4, progress=False)
    wa = a.interpret(block_image(), num_samples=150, visual=False)  # batch_size None: the predictor's 48
    distinct = len(np.unique(a.lime_results["samples"], axis=0))  # each distinct mask is classified once
    # the masks only: the unperturbed image is sample 0, so it needs no call of its own
    assert predictor.sizes == [48] * (distinct // 48) + [distinct % 48]
    b = LimeImageExplainer(lambda images: fn(images), random_seed=4, progress=False)  # no prepare/run: serial
    wb = b.interpret(block_image(), num_samples=150, batch_size=48, visual=False)
    assert wa == wb
    np.testing.assert_array_equal(a.lime_results["predictions"], b.lime_results["predictions"])
    c = LimeImageExplainer(lambda images: fn(images), random_seed=4, progress=False)
    c.interpret(block_image(), num_samples=150, visual=False)  # a plain predict_fn: interpretdl's 50
    assert predictor.sizes[-((distinct + 49) // 50):] == [50] * (distinct // 50) + [distinct % 50] * (distinct % 50 > 0)
    res = a.lime_results
    assert res["probability"] == {c: res["predictions"][0][c] for c in res["classes"]}  # the unperturbed image's


def test_repeated_masks_are_classified_once():
    """Few superpixels: 300 masks over 4 of them are at most 16 distinct images; predictions still per sample."""
    calls = []

    def predict_fn(images):
        calls.append(len(images))
        return texture_in_top_left(images)

    quadrants = lambda image: (np.arange(SIZE)[:, None] >= QUADRANT) * 2 + (np.arange(SIZE)[None] >= QUADRANT)  # noqa: E731
    explainer = LimeImageExplainer(predict_fn, random_seed=0, progress=False, segmentation_fn=quadrants)
    explainer.interpret(block_image(), num_samples=300, batch_size=64, visual=False)
    res = explainer.lime_results
    assert res["samples"].shape == (300, 4) and sum(calls) <= 16
    np.testing.assert_allclose(res["predictions"], texture_in_top_left(
        np.stack([np.where(m[res["segmentation"]][..., None], res["input"],
                           explainer._fudged_image(res["input"], res["segmentation"], 4)) for m in res["samples"]])))


def test_paddle_adapter_matches_the_model():
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.AdaptiveAvgPool2D(1), paddle.nn.Flatten(),
                                 paddle.nn.Linear(4, 5))
    images = np.stack([block_image(seed=s, size=16) for s in range(2)])
    probs = paddle_predict_fn(model)(images)
    x = ((images / 255.0 - np.array(IMAGENET_DEFAULT_MEAN)) / np.array(IMAGENET_DEFAULT_STD)).transpose(0, 3, 1, 2)
    ref = paddle.nn.functional.softmax(model(paddle.to_tensor(x.astype(np.float32)))).numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5)
    assert not model.training


# ----------------------------------------------------------------------------------------------- figures
def test_figure_png_is_written(tmp_path):
    import matplotlib.image as mpimg

    explainer, weights = explain(num_samples=60)
    path = explainer.save_figure(tmp_path / "fig" / "lime.png", class_names=["textured", "flat"], title="demo")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    fig = mpimg.imread(path)
    assert fig.ndim == 3 and fig.shape[1] > 2 * fig.shape[0]  # three panels side by side
    res = explainer.lime_results
    with pytest.raises(KeyError, match="not explained"):
        save_lime_figure(tmp_path / "x.png", res["input"], res["segmentation"], weights, classes=[1])


def test_save_path_writes_the_overlay(tmp_path):
    import matplotlib.image as mpimg

    explainer = LimeImageExplainer(texture_in_top_left, random_seed=0, progress=False)
    explainer.interpret(block_image(), num_samples=60, visual=False, save_path=tmp_path / "overlay.png")
    saved = (mpimg.imread(tmp_path / "overlay.png")[..., :3] * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(saved, explainer.lime_results["explanation"])
    # highlighted superpixels carry interpretdl's green tint
    mask = explanation_mask(explainer.lime_results["segmentation"], explainer.lime_results["lime_weights"][0])
    plain = explainer.explanation(boundaries=False)
    img = explainer.lime_results["input"]
    np.testing.assert_array_equal(plain[..., 1][mask == 1], np.uint8(255 * 0.6 + img[..., 1][mask == 1] * 0.4))


# ----------------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("kwargs, message", [
    (dict(num_samples=0), "num_samples must be a positive int"),
    (dict(num_samples=1), "at least 2"),
    (dict(batch_size=0), "batch_size must be a positive int"),
    (dict(top_k=3), "top_k=3 exceeds the model's 2 classes"),
    (dict(top_k=1.5), "top_k must be a positive int"),
    (dict(interpret_class=7), r"interpret_class \[7\] out of range"),
    (dict(interpret_class="cat"), "interpret_class must be a class index"),
    (dict(resize_to=-1), "resize_to must be a positive int or None"),
])
def test_interpret_argument_errors(kwargs, message):
    explainer = LimeImageExplainer(texture_in_top_left, random_seed=0, progress=False)
    with pytest.raises(ValueError, match=message):
        explainer.interpret(block_image(), visual=False, **kwargs)


def test_input_and_constructor_errors():
    explainer = LimeImageExplainer(texture_in_top_left, random_seed=0, progress=False)
    with pytest.raises(ValueError, match="normalised CHW"):
        explainer.interpret(np.zeros((8, 8, 3), np.float32), num_samples=10, visual=False)
    with pytest.raises(ValueError, match="one image at a time"):
        explainer.interpret(np.zeros((2, 8, 8, 3), np.uint8), num_samples=10, visual=False)
    with pytest.raises(FileNotFoundError):
        explainer.interpret("/nonexistent/cat.png", num_samples=10, visual=False)
    with pytest.raises(RuntimeError, match="interpret"):
        LimeImageExplainer(texture_in_top_left).save_figure("x.png")
    with pytest.raises(ValueError, match="unknown LIME backend"):
        LimeImageExplainer(texture_in_top_left, backend="shap")
    with pytest.raises(ValueError, match="hide_color"):
        LimeImageExplainer(texture_in_top_left, hide_color=300)
    with pytest.raises(TypeError, match="paddle.nn.Layer or a callable"):
        LimeImageExplainer("model.pdparams")
    with pytest.raises(ValueError, match=r"\[N, num_classes\]"):
        LimeImageExplainer(lambda x: np.ones(len(x)), progress=False).interpret(block_image(), visual=False)


# ----------------------------------------------------------------------------------------------- interpretdl
def test_interpretdl_backend_missing_explains_the_recipe(monkeypatch):
    monkeypatch.setitem(sys.modules, "interpretdl", None)  # makes `import interpretdl` fail
    with pytest.raises(ImportError) as err:
        LimeImageExplainer(TopLeftMean(), backend="interpretdl")
    msg = str(err.value)
    for part in ("numpy<2", "scikit-learn==1.1.3", "ipython<9", "--no-deps interpretdl==0.8.0"):
        assert part in msg


def test_interpretdl_backend_delegates(monkeypatch):
    calls = {}

    class FakeLIMECVInterpreter:
        def __init__(self, model, device="gpu:0", random_seed=None):
            calls["init"] = dict(model=model, device=device, random_seed=random_seed)
            self.lime_results = {}

        def interpret(self, data, **kwargs):
            calls["interpret"] = kwargs
            self.lime_results = {"segmentation": np.zeros((4, 4), int)}
            return {np.int64(3): [(0, 0.5)]}

    monkeypatch.setitem(sys.modules, "interpretdl", types.SimpleNamespace(LIMECVInterpreter=FakeLIMECVInterpreter))
    model = TopLeftMean()
    explainer = LimeImageExplainer(model, backend="interpretdl", random_seed=7, device="cpu")
    weights = explainer.interpret(block_image(), interpret_class=3, num_samples=10, batch_size=5, visual=False)
    assert weights == {3: [(0, 0.5)]}
    assert calls["init"] == dict(model=model, device="cpu", random_seed=7)
    assert calls["interpret"] == dict(interpret_class=3, top_k=1, num_samples=10, batch_size=5, resize_to=224,
                                      crop_to=None, visual=False, save_path=None)
    with pytest.raises(ValueError, match="needs a paddle.nn.Layer"):
        LimeImageExplainer(texture_in_top_left, backend="interpretdl")
