"""Write tests/fixtures/augment.npz: timm's augmentation outputs on small images, for tests/test_augment.py.

Run with a Python that has torch, torchvision and timm (the project itself never imports them):

    python scripts/make_fixtures_augment.py            # writes tests/fixtures/augment.npz

Resampling (resize, affine) differs between Pillow major versions, so run it with the Pillow the project
installs (pyproject.toml pins it: 12.x), e.g. a Pillow 12 put first on PYTHONPATH
(``pip install --target DIR pillow==12.3.0``, then ``PYTHONPATH=DIR python scripts/...``).

Every case seeds python's ``random`` and numpy's global RNG with its seed, then runs timm's op. timm draws some
values from torch's RNG; ppvit draws those from numpy instead (documented on each ppvit op), and this script
gives timm the same numpy draws by replacing exactly those calls:

- torchvision ``ColorJitter.get_params``: ``torch.randperm(4)`` -> ``np.random.permutation(4)``, each
  ``torch.empty(1).uniform_(lo, hi)`` -> ``np.random.uniform(lo, hi)``;
- torchvision ``RandomHorizontalFlip``: ``torch.rand(1) < p`` -> ``np.random.rand() < p``;
- timm ``random_erasing._get_pixels``: ``normal_()`` -> ``np.random.standard_normal`` (float32).

Where Pillow refuses what timm asks (``ImageOps.posterize(img, 0)`` raises on Pillow >= 12), the script uses the
older Pillow result, a black image, as ppvit does.
"""
import argparse
import json
import os
import random

import numpy as np
import PIL
import timm
import torch
import torchvision
from PIL import Image, ImageOps
from timm.data import auto_augment as aa
from timm.data import create_transform, random_erasing
from timm.data.mixup import Mixup
from timm.data.random_erasing import RandomErasing
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision import transforms as TV

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "augment.npz")
SEEDS = (0, 1, 2)
OPS_MAGNITUDES = (3, 10)
RA_CONFIGS = ("rand-m9-mstd0.5-inc1", "rand-m12-n2", "rand-m10-n3-mstd101", "rand-m7-mmax12-mstd2", "rand-m5-p1.0")
AA_CONFIGS = ("original", "v0", "originalr", "v0r", "original-mstd0.5")


# ------------------------------------------------------------------------------------ the numpy draws
def _color_jitter_params(brightness, contrast, saturation, hue):
    order = torch.as_tensor(np.random.permutation(4))
    factors = [None if r is None else float(np.random.uniform(r[0], r[1]))
               for r in (brightness, contrast, saturation, hue)]
    return (order, *factors)


def _hflip_forward(self, img):
    return TV.functional.hflip(img) if np.random.rand() < self.p else img


def _get_pixels(per_pixel, rand_color, patch_size, dtype=torch.float32, device="cpu"):
    if per_pixel:
        return torch.from_numpy(np.random.standard_normal(patch_size).astype(np.float32))
    if rand_color:
        return torch.from_numpy(np.random.standard_normal((patch_size[0], 1, 1)).astype(np.float32))
    return torch.zeros((patch_size[0], 1, 1), dtype=dtype)


_posterize = ImageOps.posterize


def _posterize_old(img, bits):
    if bits <= 0:  # Pillow < 12 masked every bit away: black
        return img.point([0] * 256 * len(img.getbands()))
    return _posterize(img, bits)


def patch():
    TV.ColorJitter.get_params = staticmethod(_color_jitter_params)
    TV.RandomHorizontalFlip.forward = _hflip_forward
    random_erasing._get_pixels = _get_pixels
    ImageOps.posterize = _posterize_old


def seed(s):
    random.seed(s)
    np.random.seed(s)


# --------------------------------------------------------------------------------------------- inputs
def images():
    """Two small RGB images: a smooth colour field with texture (30x24) and a taller one (22x30)."""
    rng = np.random.RandomState(0)
    out = []
    for h, w in ((24, 30), (30, 22)):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w) + 60], -1)
        img = np.clip(base + rng.randint(-24, 24, (h, w, 3)), 0, 255).astype(np.uint8)
        out.append(img)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=OUT)
    args = parser.parse_args()
    patch()
    data = {}
    imgs = images()
    for i, im in enumerate(imgs):
        data[f"image{i}"] = im
    pil = Image.fromarray(imgs[0])
    hparams = {"translate_const": 14, "img_mean": (124, 116, 104)}

    # every op at two magnitudes, applied (prob 1), random and fixed interpolation
    for name in aa.NAME_TO_OP:
        if name in ("Desaturate", "GaussianBlur", "GaussianBlurRand"):
            continue  # 3-Augment ops: not part of the RandAugment/AutoAugment policies ppvit offers
        for m in OPS_MAGNITUDES:
            for s in SEEDS[:1]:
                seed(s)
                data[f"op/{name}/m{m}/s{s}"] = np.asarray(aa.AugmentOp(name, 1.0, m, hparams)(pil))
        seed(5)
        hp = dict(hparams, magnitude_std=0.5, interpolation=Image.BILINEAR)
        data[f"op/{name}/mstd/s5"] = np.asarray(aa.AugmentOp(name, 1.0, 9, hp)(pil))

    for cfg in RA_CONFIGS:
        t = aa.rand_augment_transform(cfg, dict(hparams))
        for s in SEEDS:
            for i, im in enumerate(imgs):
                seed(s)
                data[f"ra/{cfg}/img{i}/s{s}"] = np.asarray(t(Image.fromarray(im)))
    for cfg in AA_CONFIGS:
        t = aa.auto_augment_transform(cfg, dict(hparams))
        for s in SEEDS:
            seed(s)
            data[f"aa/{cfg}/s{s}"] = np.asarray(t(pil))

    # RandomResizedCrop, ColorJitter, flip
    crops = [((0.08, 1.0), (3 / 4, 4 / 3), "bilinear"), ((0.25, 1.0), (0.5, 2.0), "bicubic"),
             ((0.9, 1.0), (3 / 4, 4 / 3), "random"), ((0.9, 1.0), (3.0, 4.0), "bilinear")]
    for k, (scale, ratio, interp) in enumerate(crops):
        t = RandomResizedCropAndInterpolation(16, scale=scale, ratio=ratio, interpolation=interp)
        for s in SEEDS:
            seed(s)
            data[f"rrc/{k}/s{s}"] = np.asarray(t(pil))
    for k, jitter in enumerate([(0.4, 0.4, 0.4), (0.3, 0.2, 0.5, 0.1), (0.0, 0.4, 0.0)]):
        t = TV.ColorJitter(*jitter)
        for s in SEEDS:
            seed(s)
            data[f"jitter/{k}/s{s}"] = np.asarray(t(pil))
    for s in SEEDS:
        seed(s)
        data[f"flip/s{s}"] = np.asarray(TV.RandomHorizontalFlip(0.5)(pil))

    # RandomErasing on a normalised CHW float32 image
    chw = ((imgs[0][:12, :16].transpose(2, 0, 1) / 255.0 - 0.45) / 0.25).astype(np.float32)
    data["erase/input"] = chw
    for mode in ("const", "rand", "pixel"):
        for count in (1, 3):
            t = RandomErasing(1.0, mode=mode, max_count=count, device="cpu")
            for s in SEEDS:
                seed(s)
                data[f"erase/{mode}/{count}/s{s}"] = t(torch.from_numpy(chw.copy())).numpy()

    # create_transform: train pipelines and eval pipelines
    trains = {
        "deit": dict(scale=None, auto_augment="rand-m9-mstd0.5-inc1", interpolation="bicubic", re_prob=0.25,
                     re_mode="pixel", re_count=1),
        "jitter": dict(scale=(0.35, 1.0), color_jitter=0.4, interpolation="random", hflip=0.5),
        "aa": dict(auto_augment="original", interpolation="bilinear", re_prob=0.5, re_mode="rand", re_count=2),
    }
    for name, kw in trains.items():
        t = create_transform(16, is_training=True, **kw)
        for s in SEEDS:
            seed(s)
            data[f"train/{name}/s{s}"] = t(pil).numpy()
    for k, (size, crop_pct, interp) in enumerate([(16, None, "bilinear"), (16, 0.9, "bicubic"),
                                                  (20, 1.0, "bicubic"), (12, 0.875, "bilinear")]):
        t = create_transform(size, is_training=False, crop_pct=crop_pct, interpolation=interp,
                             mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
        for i, im in enumerate(imgs):
            data[f"eval/{k}/img{i}"] = t(Image.fromarray(im)).numpy()

    # Mixup / CutMix
    rng = np.random.RandomState(3)
    x = rng.standard_normal((6, 2, 10, 12)).astype(np.float32)
    y = rng.randint(0, 5, 6).astype(np.int64)
    data["mix/x"], data["mix/y"] = x, y
    mixes = {
        "mixup": dict(mixup_alpha=0.8),
        "cutmix": dict(mixup_alpha=0.0, cutmix_alpha=1.0),
        "both": dict(mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, label_smoothing=0.1),
        "minmax": dict(mixup_alpha=0.0, cutmix_minmax=(0.2, 0.8)),
        "pair": dict(mixup_alpha=0.8, cutmix_alpha=1.0, mode="pair"),
        "elem": dict(mixup_alpha=0.8, cutmix_alpha=1.0, mode="elem", prob=0.7),
        "prob": dict(mixup_alpha=0.8, prob=0.5),
    }
    data["mix/configs"] = np.array(json.dumps(mixes))  # the test builds its Mixups from these
    for name, kw in mixes.items():
        kw.setdefault("label_smoothing", 0.0)
        m = Mixup(num_classes=5, **kw)
        for s in SEEDS:
            seed(s)
            xm, ym = m(torch.from_numpy(x.copy()), torch.from_numpy(y))
            data[f"mix/{name}/s{s}/x"], data[f"mix/{name}/s{s}/y"] = xm.numpy(), ym.numpy()

    data["versions"] = np.array([timm.__version__, torch.__version__, torchvision.__version__, PIL.__version__])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    np.savez_compressed(args.out, **data)
    print(f"wrote {len(data)} arrays to {args.out} ({os.path.getsize(args.out) / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
