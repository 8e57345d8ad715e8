"""Grad-CAM (ppvit.explain.GradCAM) on every family, checked against a hand computation, and the deletion /
insertion faithfulness score on a model trained here for a few seconds on the embedded digits."""
import cv2
import numpy as np
import paddle
import pytest

import ppvit
from ppvit.explain import GradCAM, faithfulness, lime_saliency, paddle_predict_fn
from ppvit.explain.gradcam import default_target_layer
from ppvit.kernels import use_kernels

# the smallest variants that still leave a spatial grid (>= 2x2) at the target layer; batch 2
FAMILIES = {
    "conv2former_n_cifar": (dict(depths=(1, 1, 1, 1), dims=(8, 16, 16, 16)), 32, "layers.3", 4),
    "conv2former_n": (dict(depths=(1, 1, 1, 1), dims=(8, 16, 16, 16), head_dim=32), 64, "stages.3", 2),
    "convit_tiny": (dict(img_size=32, patch_size=8, embed_dim=16, depth=3, local_up_to_layer=2), 32,
                    "blocks.2.norm1", 4),
    "coatnet_0": (dict(image_size=64, num_blocks=[1, 2, 1, 2, 1], channels=[8, 8, 16, 16, 16]), 64, "s4", 2),
    "convmixer_256_8": (dict(dim=16, depth=2, img_size=16), 16, "4", 8),
    "dilateformer_t": (dict(img_size=None, depths=(1, 1, 1, 1)), 64, "stages.3", 2),
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_gradcam_per_family_shape_range_and_class(name):
    kwargs, size, layer, grid = FAMILIES[name]
    paddle.seed(0)
    model = ppvit.create_model(name, num_classes=4, **kwargs).eval()
    x = np.random.default_rng(1).normal(size=(2, 3, size, size)).astype("float32")
    cam = GradCAM(model)
    assert cam.layer_name == layer == default_target_layer(model)[0]
    maps = cam(x)
    assert maps.shape == (2, size, size) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert cam.raw.shape == (2, grid, grid)
    assert cam.activations.shape[2:] == (grid, grid)
    # the default class is the predicted one
    with paddle.no_grad():
        logits = model(paddle.to_tensor(x)).numpy()
    assert cam.class_ids == list(logits.argmax(1))
    np.testing.assert_allclose(cam.logits, logits, rtol=1e-4, atol=1e-5)
    # another class gives another gradient target: other weights alpha_k, another map
    other = [(c + 1) % 4 for c in cam.class_ids]
    alpha = cam.gradients.mean(axis=(2, 3))
    maps_other = cam(x, class_ids=other)
    assert cam.class_ids == other
    assert not np.allclose(alpha, cam.gradients.mean(axis=(2, 3)))
    assert not np.allclose(maps, maps_other)
    # a map per image: the first image alone gives the first map
    np.testing.assert_allclose(cam(x[:1], class_ids=other[0])[0], maps_other[0], atol=1e-4)


def test_gradcam_equals_hand_computation_on_convmixer():
    """ReLU(sum_k mean_ij(dy_c/dA_k) A_k) on the last ConvMixer block, computed by splitting the model there
    (no hooks), upsampled with OpenCV's bilinear resize and divided by its maximum."""
    paddle.seed(0)
    model = ppvit.create_model("convmixer_256_8", num_classes=3, dim=8, depth=2, img_size=16).eval()
    x = np.random.default_rng(2).normal(size=(2, 3, 16, 16)).astype("float32")
    layers = list(model.children())
    split = model.depth + 3  # patch conv, act, BN, blocks | pool, flatten, head
    cam = GradCAM(model)
    positive = 0
    for c in range(3):
        maps = cam(x, class_ids=c)
        for b in range(2):
            a = paddle.to_tensor(x[b:b + 1])
            for layer in layers[:split]:
                a = layer(a)
            a = paddle.to_tensor(a.numpy(), stop_gradient=False)  # the target layer's output, as a leaf
            y = a
            with use_kernels(False):  # paddle.grad's partial backward, as GradCAM runs it: Paddle's own ops
                for layer in layers[split:]:
                    y = layer(y)
                (g,) = paddle.grad(y[0, c], a)
            A, G = a.numpy()[0], g.numpy()[0]  # K, h, w
            hand = np.maximum((G.mean(axis=(1, 2))[:, None, None] * A).sum(0), 0.0)
            np.testing.assert_allclose(cam.raw[b], hand, rtol=1e-4, atol=1e-6)
            if hand.max() > 0:
                positive += 1
                up = cv2.resize(hand.astype(np.float32), (16, 16), interpolation=cv2.INTER_LINEAR)
                np.testing.assert_allclose(maps[b], up / up.max(), atol=1e-4)
            else:  # no positive evidence anywhere: an all-zero map
                assert not maps[b].any()
    assert positive >= 2


def test_gradcam_refuses_bad_arguments():
    model = ppvit.create_model("convmixer_256_8", num_classes=3, dim=8, depth=1, img_size=16)
    with pytest.raises(ValueError, match="not a sublayer"):
        GradCAM(model, target_layer="nope")
    with pytest.raises(ValueError, match="no default Grad-CAM layer"):
        GradCAM(paddle.nn.Sequential(paddle.nn.Conv2D(3, 2, 3), paddle.nn.Flatten()))
    cam = GradCAM(model, target_layer=model[3])  # a layer object
    assert cam.layer_name == "3"
    x = np.zeros((1, 3, 16, 16), np.float32)
    with pytest.raises(ValueError, match="out of range"):
        cam(x, class_ids=3)
    with pytest.raises(ValueError, match="NCHW"):
        cam(x[0])
    # the model's mode is restored after a call
    model.train()
    cam(x)
    assert model.training


# ------------------------------------------------------------------------------------------ faithfulness
@pytest.fixture(scope="module")
def trained():
    """A tiny ConvMixer (width 16, depth 2) trained for 150 steps on the digits at 16x16 (~94% held-out top-1):
    (model, held-out RGB uint8 images, their labels)."""
    from ppvit.data.digits import render_digits

    images, labels = render_digits()
    small = np.stack([cv2.resize(im, (16, 16), interpolation=cv2.INTER_AREA) for im in images])
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = ((small / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype("float32")
    paddle.seed(0)
    model = ppvit.create_model("convmixer_256_8", num_classes=10, dim=16, depth=2, img_size=16)
    opt = paddle.optimizer.Adam(0.01, parameters=model.parameters())
    rng = np.random.default_rng(0)
    n_train = 1400
    model.train()
    for _ in range(150):
        idx = rng.integers(0, n_train, 64)
        loss = paddle.nn.functional.cross_entropy(model(paddle.to_tensor(x[idx])), paddle.to_tensor(labels[idx]))
        loss.backward()
        opt.step()
        opt.clear_grad()
    model.eval()
    with paddle.no_grad():
        acc = (model(paddle.to_tensor(x[n_train:])).numpy().argmax(1) == labels[n_train:]).mean()
    assert acc > 0.8
    return model, small[n_train:n_train + 10], labels[n_train:n_train + 10]


def test_removing_the_top_quarter_hurts_more_than_a_random_quarter(trained):
    model, images, _ = trained
    predict_fn = paddle_predict_fn(model)
    cam = GradCAM(model)
    top, rand, gains = [], [], []
    for image in images:
        x = predict_fn.prepare(image[None])
        saliency = cam(x)[0]
        res = faithfulness(predict_fn, image, saliency, cam.class_ids[0], n_random=3, seed=0)
        assert res["fractions"][5] == 0.25 and len(res["deletion"]) == 21
        # the curves start at the image's own probability, and insertion ends there
        p = predict_fn(image[None])[0, cam.class_ids[0]]
        assert res["deletion"][0] == pytest.approx(p, abs=1e-5) and res["insertion"][-1] == pytest.approx(p, abs=1e-5)
        top.append(res["deletion"][5])
        rand.append(res["deletion_random"][5])
        gains.append((res["deletion_gain"], res["insertion_gain"]))
    assert np.mean(top) < np.mean(rand) - 0.1, (top, rand)
    assert (np.mean(gains, axis=0) > 0.05).all(), gains
    # the score measures the ranking: the reversed ranking (least salient first) does worse than random
    image = images[0]
    saliency = cam(predict_fn.prepare(image[None]))[0]
    best = faithfulness(predict_fn, image, saliency, cam.class_ids[0])
    worst = faithfulness(predict_fn, image, -saliency, cam.class_ids[0])
    assert best["deletion_auc"] < worst["deletion_auc"]


def test_lime_saliency_and_faithfulness_inputs():
    segments = np.array([[0, 0, 1], [2, 2, 1]])
    np.testing.assert_array_equal(lime_saliency(segments, [(1, 0.5), (0, -0.2), (2, 0.1)]),
                                  [[-0.2, -0.2, 0.5], [0.1, 0.1, 0.5]])

    def probe(images):  # class 0's probability = the mean brightness of the top-left pixel
        p = np.asarray(images, np.float64)[:, 0, 0].mean(axis=1) / 255.0
        return np.stack([p, 1 - p], axis=1)

    image = np.full((4, 4, 3), 200, np.uint8)
    saliency = np.zeros((4, 4))
    saliency[0, 0] = 1.0
    res = faithfulness(probe, image, saliency, 0, steps=16, n_random=2, mean=(0.0, 0.0, 0.0))
    assert res["deletion"][0] == pytest.approx(200 / 255) and res["deletion"][1] == 0.0  # 1/16: that pixel
    assert res["deletion_gain"] > 0
    with pytest.raises(ValueError, match="saliency shape"):
        faithfulness(probe, image, saliency[:2], 0)
