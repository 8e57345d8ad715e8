"""timm's augmentation in ppvit (no torch) against timm's own outputs: tests/fixtures/augment.npz, written by
scripts/make_fixtures_augment.py (which gives timm numpy's draws where timm calls torch's RNG, as documented
on the ppvit ops). PIL ops must be equal pixel for pixel, the float pipelines within 1e-5."""
import json
import os
import random

import numpy as np
import pytest
from PIL import Image

from ppvit.data import (Mixup, RandomErasing, auto_augment_transform, create_transform,
                        rand_augment_transform)
from ppvit.data import auto_augment as aa
from ppvit.data import transforms_factory as tf

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "augment.npz")
HPARAMS = {"translate_const": 14, "img_mean": (124, 116, 104)}


@pytest.fixture(scope="module")
def fx():
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


def test_fixture_made_with_this_pillow(fx):
    """Resampling differs between Pillow major versions: the fixtures hold for the one pyproject.toml pins."""
    import PIL

    made_with = str(fx["versions"][3])
    assert made_with.split(".")[0] == PIL.__version__.split(".")[0], (
        f"fixtures made with Pillow {made_with}, this is {PIL.__version__}: regenerate them with "
        "scripts/make_fixtures_augment.py under this Pillow")


def seed(s):
    random.seed(s)
    np.random.seed(s)


def keys(fx, prefix):
    found = sorted(k for k in fx if k.startswith(prefix))
    assert found, prefix
    return found


def test_every_op_equals_timm(fx):
    names = {k.split("/")[1] for k in keys(fx, "op/")}
    assert names == set(aa.OPS)  # every op of the policies is covered
    pil = Image.fromarray(fx["image0"])
    for k in keys(fx, "op/"):
        _, name, m, s = k.split("/")
        seed(int(s[1:]))
        if m == "mstd":
            hp = dict(HPARAMS, magnitude_std=0.5, interpolation=Image.BILINEAR)
            out = aa.AugmentOp(name, 1.0, 9, hp)(pil)
        else:
            out = aa.AugmentOp(name, 1.0, int(m[1:]), HPARAMS)(pil)
        np.testing.assert_array_equal(np.asarray(out), fx[k], err_msg=k)


def test_posterize_keeping_no_bits_is_black():
    """Pillow >= 12 refuses 0 bits; the older result (every bit masked away) is kept."""
    img = Image.fromarray(np.full((4, 5, 3), 200, np.uint8))
    assert np.asarray(aa.posterize(img, 0)).max() == 0
    seed(0)
    out = aa.AugmentOp("PosterizeIncreasing", 1.0, 10, HPARAMS)(img)  # 4 - int(10 / 10 * 4) = 0 bits
    assert np.asarray(out).max() == 0


def test_rand_and_auto_augment_policies_equal_timm(fx):
    for k in keys(fx, "ra/"):
        _, cfg, img, s = k.split("/")
        t = rand_augment_transform(cfg, dict(HPARAMS))
        seed(int(s[1:]))
        np.testing.assert_array_equal(np.asarray(t(Image.fromarray(fx["image" + img[3:]]))), fx[k], err_msg=k)
    pil = Image.fromarray(fx["image0"])
    policies = set()
    for k in keys(fx, "aa/"):
        _, cfg, s = k.split("/")
        policies.add(cfg.split("-")[0])
        t = auto_augment_transform(cfg, dict(HPARAMS))
        seed(int(s[1:]))
        np.testing.assert_array_equal(np.asarray(t(pil)), fx[k], err_msg=k)
    assert {"original", "v0", "originalr"} <= policies


def test_bad_config_strings_are_refused():
    from ppvit.data import DataError

    with pytest.raises(DataError, match="unknown RandAugment config section 'x3'"):
        rand_augment_transform("rand-m9-x3")
    with pytest.raises(DataError, match="must start with one of"):
        auto_augment_transform("nosuch")


def test_crop_jitter_flip_equal_timm(fx):
    pil = Image.fromarray(fx["image0"])
    crops = [((0.08, 1.0), (3 / 4, 4 / 3), "bilinear"), ((0.25, 1.0), (0.5, 2.0), "bicubic"),
             ((0.9, 1.0), (3 / 4, 4 / 3), "random"), ((0.9, 1.0), (3.0, 4.0), "bilinear")]
    for k, (scale, ratio, interp) in enumerate(crops):
        t = tf.RandomResizedCropAndInterpolation(16, scale=scale, ratio=ratio, interpolation=interp)
        for key in keys(fx, f"rrc/{k}/"):
            seed(int(key.split("/s")[-1]))
            np.testing.assert_array_equal(np.asarray(t(pil)), fx[key], err_msg=key)
    for k, jitter in enumerate([(0.4, 0.4, 0.4), (0.3, 0.2, 0.5, 0.1), (0.0, 0.4, 0.0)]):
        t = tf.ColorJitter(*jitter)
        for key in keys(fx, f"jitter/{k}/"):
            seed(int(key.split("/s")[-1]))
            np.testing.assert_array_equal(np.asarray(t(pil)), fx[key], err_msg=key)
    flipped = 0
    for key in keys(fx, "flip/"):
        seed(int(key.split("/s")[-1]))
        out = np.asarray(tf.RandomHorizontalFlip(0.5)(pil))
        np.testing.assert_array_equal(out, fx[key], err_msg=key)
        flipped += not np.array_equal(out, fx["image0"])
    assert 0 < flipped < 3  # both outcomes occur among the seeds


def test_random_erasing_equals_timm(fx):
    for mode in ("const", "rand", "pixel"):
        for count in (1, 3):
            t = RandomErasing(1.0, mode=mode, max_count=count)
            for key in keys(fx, f"erase/{mode}/{count}/"):
                seed(int(key.split("/s")[-1]))
                out = t(fx["erase/input"].copy())
                np.testing.assert_array_equal(out, fx[key], err_msg=key)
                assert not np.array_equal(out, fx["erase/input"])  # something was erased


def test_create_transform_equals_timm(fx):
    trains = {
        "deit": dict(scale=None, auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic", re_prob=0.25,
                     re_mode="pixel", re_count=1),
        "jitter": dict(scale=(0.35, 1.0), color_jitter=0.4, interpolation="random", hflip=0.5),
        "aa": dict(auto_augment="original", interpolation="bilinear", re_prob=0.5, re_mode="rand", re_count=2),
    }
    pil = Image.fromarray(fx["image0"])
    for name, kw in trains.items():
        t = create_transform(16, is_training=True, **kw)
        for key in keys(fx, f"train/{name}/"):
            seed(int(key.split("/s")[-1]))
            out = t(pil)
            assert out.dtype == np.float32 and out.shape == (3, 16, 16)
            np.testing.assert_allclose(out, fx[key], atol=1e-5, rtol=0, err_msg=key)
    for k, (size, crop_pct, interp) in enumerate([(16, None, "bilinear"), (16, 0.9, "bicubic"),
                                                  (20, 1.0, "bicubic"), (12, 0.875, "bilinear")]):
        t = create_transform(size, is_training=False, crop_pct=crop_pct, interpolation=interp,
                             mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        for i in range(2):
            out = t(Image.fromarray(fx[f"image{i}"]))
            assert out.shape == (3, size, size)
            np.testing.assert_allclose(out, fx[f"eval/{k}/img{i}"], atol=1e-5, rtol=0, err_msg=f"eval {k} {i}")


def test_mixup_equals_timm(fx):
    import paddle

    mixes = json.loads(str(fx["mix/configs"]))  # as the fixture script made them
    x, y = fx["mix/x"], fx["mix/y"]
    for name, kw in mixes.items():
        kw.setdefault("label_smoothing", 0.0)
        m = Mixup(num_classes=5, **kw)
        for s in range(3):
            seed(s)
            xm, ym = m(paddle.to_tensor(x), paddle.to_tensor(y))
            np.testing.assert_allclose(xm.numpy(), fx[f"mix/{name}/s{s}/x"], atol=1e-6, err_msg=name)
            np.testing.assert_allclose(ym.numpy(), fx[f"mix/{name}/s{s}/y"], atol=1e-6, err_msg=name)
