"""timm's ImageNet transforms on PIL images, without torch: ``create_transform`` and its ops.

``create_transform(input_size, is_training, ...)`` builds what ``timm.data.create_transform`` builds (train:
RandomResizedCropAndInterpolation, horizontal flip, RandAugment/AutoAugment or ColorJitter, ToTensor +
Normalize, RandomErasing; eval: resize the shorter side to ``floor(size / crop_pct)``, centre crop,
ToTensor + Normalize), taking a PIL image and returning a CHW float32 ndarray.

Random draws: the ops timm writes itself draw from python's ``random`` here as there (crop box,
interpolation, RandAugment/AutoAugment, erasing boxes), so they match under the same seed. Where timm calls
torchvision or torch RNG (the flip's ``torch.rand``, ColorJitter's ``torch.randperm`` / ``uniform_``,
erasing noise's ``normal_``), ppvit draws from numpy's global RNG as documented on each op; the fixture
script (scripts/make_fixtures_augment.py) gives timm those same numpy draws, and then every output equals
timm's pixel for pixel (tests/test_augment.py).
"""
import math
import random

import numpy as np
from PIL import Image, ImageEnhance

from ..constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from .auto_augment import augment_transform
from .errors import DataError
from .random_erasing import RandomErasing

DEFAULT_CROP_PCT = 0.875  # timm's eval crop fraction when neither the caller nor the model gives one
PIL_INTERPOLATION = {"nearest": Image.NEAREST, "bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC,
                     "box": Image.BOX, "hamming": Image.HAMMING, "lanczos": Image.LANCZOS}
RANDOM_INTERPOLATION = (Image.BILINEAR, Image.BICUBIC)


def pil_interpolation(name):
    """A PIL resampling filter by timm's name (bilinear, bicubic, nearest, box, hamming, lanczos)."""
    if name not in PIL_INTERPOLATION:
        raise DataError(f"unknown interpolation '{name}'; accepted: {', '.join(PIL_INTERPOLATION)}")
    return PIL_INTERPOLATION[name]


def _pair(size):
    if isinstance(size, (list, tuple)):
        if len(size) != 2:
            raise DataError(f"an image size is an int or [height, width], got {list(size)}")
        return int(size[0]), int(size[1])
    return int(size), int(size)


def _pil(img):
    if not isinstance(img, Image.Image):
        raise DataError(f"this transform takes a PIL image, got {type(img).__name__} (use image backend 'pil')")
    return img


class Compose:
    """Applies ``transforms`` in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img

    def __repr__(self):
        return "Compose(" + ", ".join(type(t).__name__ for t in self.transforms) + ")"


class RandomResizedCropAndInterpolation:
    """A random crop of ``scale`` (area fraction) and ``ratio`` (w/h, log-uniform) resized to ``size``
    (int or [H, W]); ``interpolation`` a name or ``random`` (bilinear or bicubic per image). After 10 failed
    draws, a centre crop clamped to ``ratio``. Draws (python ``random``): area, log-ratio per attempt, then top,
    left; then the filter when random. PIL -> PIL."""

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0), interpolation="bilinear"):
        self.size = _pair(size)
        self.scale, self.ratio = tuple(scale), tuple(ratio)
        self.interpolation = RANDOM_INTERPOLATION if interpolation == "random" else pil_interpolation(interpolation)

    @staticmethod
    def get_params(img, scale, ratio):
        """(top, left, height, width) of the crop."""
        img_w, img_h = img.size
        area = img_w * img_h
        log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        for _ in range(10):
            target_area = random.uniform(*scale) * area
            aspect = math.exp(random.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if w <= img_w and h <= img_h:
                return random.randint(0, img_h - h), random.randint(0, img_w - w), h, w
        in_ratio = img_w / img_h
        if in_ratio < min(ratio):
            w, h = img_w, int(round(img_w / min(ratio)))
        elif in_ratio > max(ratio):
            w, h = int(round(img_h * max(ratio))), img_h
        else:
            w, h = img_w, img_h
        return (img_h - h) // 2, (img_w - w) // 2, h, w

    def __call__(self, img):
        top, left, h, w = self.get_params(_pil(img), self.scale, self.ratio)
        interp = self.interpolation
        if isinstance(interp, tuple):
            interp = random.choice(interp)
        img = img.crop((left, top, left + w, top + h))
        if (h, w) != self.size:
            img = img.resize((self.size[1], self.size[0]), interp)
        return img


class RandomHorizontalFlip:
    """Mirrors left-right with probability ``p``. Draw: ``np.random.rand()`` (timm: torchvision's
    ``torch.rand(1)``). PIL -> PIL."""

    def __init__(self, p=0.5):
        self.p = float(p)

    def __call__(self, img):
        if np.random.rand() < self.p:
            return _pil(img).transpose(Image.FLIP_LEFT_RIGHT)
        return img


def _jitter_range(value, center=1.0, bound=None):
    if value is None or value == 0:
        return None
    if isinstance(value, (list, tuple)):
        lo, hi = float(value[0]), float(value[1])
    else:
        if value < 0:
            raise DataError(f"a ColorJitter factor must be >= 0, got {value}")
        lo, hi = center - float(value), center + float(value)
        if bound is None:
            lo = max(lo, 0.0)
    if bound is not None and not (-bound <= lo <= hi <= bound):
        raise DataError(f"ColorJitter hue must be within [-{bound}, {bound}], got [{lo}, {hi}]")
    return None if lo == hi == center else (lo, hi)


class ColorJitter:
    """torchvision's ColorJitter on PIL images: brightness/contrast/saturation factors uniform in
    ``[max(0, 1 - v), 1 + v]``, hue shift in ``[-h, h]`` (h <= 0.5), applied in a random order.

    Draws (numpy, where torchvision uses ``torch.randperm(4)`` and ``torch.empty(1).uniform_``): the order
    ``np.random.permutation(4)``, then one ``np.random.uniform(lo, hi)`` per enabled factor (brightness,
    contrast, saturation, hue). PIL -> PIL."""

    def __init__(self, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0):
        self.brightness = _jitter_range(brightness)
        self.contrast = _jitter_range(contrast)
        self.saturation = _jitter_range(saturation)
        self.hue = _jitter_range(hue, center=0.0, bound=0.5)

    def get_params(self):
        order = np.random.permutation(4)
        factors = [None if r is None else float(np.random.uniform(r[0], r[1]))
                   for r in (self.brightness, self.contrast, self.saturation, self.hue)]
        return order, factors

    def __call__(self, img):
        _pil(img)
        order, (b, c, s, h) = self.get_params()
        for i in order:
            if i == 0 and b is not None:
                img = ImageEnhance.Brightness(img).enhance(b)
            elif i == 1 and c is not None:
                img = ImageEnhance.Contrast(img).enhance(c)
            elif i == 2 and s is not None:
                img = ImageEnhance.Color(img).enhance(s)
            elif i == 3 and h is not None:
                img = adjust_hue(img, h)
        return img


def adjust_hue(img, hue_factor):
    """Shifts the hue channel of an RGB PIL image by ``hue_factor`` of a turn (uint8 wrap-around, as
    torchvision)."""
    if img.mode in ("L", "1", "I", "F"):
        return img
    mode = img.mode
    h, s, v = img.convert("HSV").split()
    shifted = np.array(h, dtype=np.uint8)
    shifted += np.int32(hue_factor * 255).astype(np.uint8)
    return Image.merge("HSV", (Image.fromarray(shifted, "L"), s, v)).convert(mode)


class ResizeShorter:
    """Resizes the shorter side to ``size`` keeping the aspect ratio (the longer side ``int(size * long /
    short)``, as torchvision's ``Resize(int)``); an image already that size is returned as is. PIL -> PIL."""

    def __init__(self, size, interpolation="bilinear"):
        self.size = int(size)
        self.interpolation = pil_interpolation(interpolation)

    def __call__(self, img):
        w, h = _pil(img).size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.size, int(self.size * long / short)
        new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
        if (new_w, new_h) == (w, h):
            return img
        return img.resize((new_w, new_h), self.interpolation)


class CenterCrop:
    """The central ``size`` (int or [H, W]) crop; an image smaller than that is first padded with zeros
    (torchvision's rounding: top = round((H - h) / 2)). PIL -> PIL."""

    def __init__(self, size):
        self.size = _pair(size)

    def __call__(self, img):
        crop_h, crop_w = self.size
        w, h = _pil(img).size
        if crop_w > w or crop_h > h:
            padded = Image.new(img.mode, (max(w, crop_w), max(h, crop_h)))
            padded.paste(img, ((crop_w - w) // 2 if crop_w > w else 0, (crop_h - h) // 2 if crop_h > h else 0))
            img, (w, h) = padded, padded.size
            if (w, h) == (crop_w, crop_h):
                return img
        top, left = int(round((h - crop_h) / 2.0)), int(round((w - crop_w) / 2.0))
        return img.crop((left, top, left + crop_w, top + crop_h))


class ToNormalizedArray:
    """PIL image (or HWC uint8 array) -> CHW float32 ``(pixel / 255 - mean) / std`` (torchvision's ToTensor
    then Normalize)."""

    def __init__(self, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD):
        self.mean = np.asarray(mean, np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(-1, 1, 1)
        # uint8 pixels take 256 values: the float32 result of each, per channel, computed once with the same
        # float32 operations (so a lookup gives the very numbers the arithmetic would)
        levels = np.arange(256, dtype=np.float32)[None, :] / np.float32(255.0)
        self.lut = np.ascontiguousarray((levels - self.mean[:, :, 0]) / self.std[:, :, 0])  # [C, 256]

    def __call__(self, img):
        x = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) and img.mode != "RGB" else img)
        if x.ndim != 3 or x.shape[2] != len(self.lut):
            raise DataError(f"ToNormalizedArray takes an HWC image with {len(self.lut)} channels, got shape {x.shape}")
        if x.dtype == np.uint8:
            return np.stack([self.lut[c][x[:, :, c]] for c in range(len(self.lut))])
        x = x.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
        return np.ascontiguousarray((x - self.mean) / self.std)


def _img_size(input_size):
    if isinstance(input_size, (tuple, list)):
        return _pair(input_size[-2:])
    return _pair(input_size)


def create_transform(input_size, is_training=False, scale=None, ratio=None, hflip=0.5, color_jitter=0.4,
                     auto_augment=None, interpolation="bilinear", mean=IMAGENET_DEFAULT_MEAN,
                     std=IMAGENET_DEFAULT_STD, crop_pct=None, re_prob=0.0, re_mode="const", re_count=1):
    """timm's ``create_transform`` (``transforms_imagenet_train`` / ``_eval``): PIL RGB image -> CHW float32.

    ``input_size``: an int, (H, W) or (C, H, W). Training: RandomResizedCropAndInterpolation(``scale``
    (default 0.08-1), ``ratio`` (3/4-4/3), ``interpolation``: a name or ``random``), horizontal flip with
    probability ``hflip``, then ``auto_augment`` (a ``rand-...`` RandAugment or ``original``/``v0``/... AutoAugment
    string, whose affine ops fill with ``mean`` in 0..255 and translate up to 0.45 of the size) or else
    ColorJitter(``color_jitter``: a float for brightness/contrast/saturation, or a 3/4-tuple), normalisation,
    and RandomErasing(``re_prob``, ``re_mode``, up to ``re_count`` boxes) when ``re_prob`` > 0. Evaluation:
    shorter side to ``floor(size / crop_pct)`` (``crop_pct`` default 0.875), centre crop ``size``,
    normalisation. A non-square eval size is refused (``DataError``), as is an unknown interpolation.
    """
    img_size = _img_size(input_size)
    if not is_training:
        crop_pct = crop_pct or DEFAULT_CROP_PCT
        if img_size[0] != img_size[1]:
            raise DataError(f"the eval transform takes a square size, got {list(img_size)}")
        return Compose([ResizeShorter(math.floor(img_size[0] / crop_pct), interpolation), CenterCrop(img_size),
                        ToNormalizedArray(mean, std)])
    ops = [RandomResizedCropAndInterpolation(img_size, scale=tuple(scale or (0.08, 1.0)),
                                             ratio=tuple(ratio or (3.0 / 4.0, 4.0 / 3.0)),
                                             interpolation=interpolation)]
    if hflip > 0:
        ops.append(RandomHorizontalFlip(hflip))
    if auto_augment:
        hparams = {"translate_const": int(min(img_size) * 0.45),
                   "img_mean": tuple(min(255, round(255 * m)) for m in mean)}
        if interpolation and interpolation != "random":
            hparams["interpolation"] = pil_interpolation(interpolation)
        ops.append(augment_transform(auto_augment, hparams))
    elif color_jitter is not None:
        jitter = tuple(color_jitter) if isinstance(color_jitter, (list, tuple)) else (float(color_jitter),) * 3
        if len(jitter) not in (3, 4):
            raise DataError(f"color_jitter takes 1, 3 or 4 values, got {list(jitter)}")
        ops.append(ColorJitter(*jitter))
    ops.append(ToNormalizedArray(mean, std))
    if re_prob > 0:
        ops.append(RandomErasing(re_prob, mode=re_mode, max_count=re_count))
    return Compose(ops)
