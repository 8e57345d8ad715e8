"""AutoAugment and RandAugment on PIL images, with timm's semantics (``timm/data/auto_augment.py``).

``rand_augment_transform('rand-m9-mstd0.5-inc1', hparams)`` and ``auto_augment_transform('original', hparams)``
read timm's config strings and return a callable PIL image -> PIL image. Under the same ``random.seed`` and
``np.random.seed`` they make timm's random draws in timm's order (which op: ``np.random.choice`` for
RandAugment, ``random.choice`` for AutoAugment's sub-policy; whether it applies, its magnitude noise and sign,
and a random resampling filter: python's ``random``), so their images equal timm's pixel for pixel
(tests/test_augment.py against fixtures written by scripts/make_fixtures_augment.py).

Sources: RandAugment (Cubuk et al. 2019, arXiv:1909.13719), AutoAugment (Cubuk et al. 2018, arXiv:1805.09501)
policies as in the TPU EfficientNet code, timm's level-to-argument maps and its ``mstd``/``inc``/``mmax`` options.

One deliberate difference: Posterize keeping 0 bits (``PosterizeIncreasing`` at magnitude 10, the top of
DeiT's ``rand-m9-mstd0.5-inc1`` noise) gives a black image, what ``ImageOps.posterize(img, 0)`` gave before
Pillow 12 (Pillow 12 refuses 0 bits, so timm raises there).
"""
import random
import re

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from .errors import DataError

FILL = (128, 128, 128)
LEVEL_DENOM = 10.0  # magnitude M of 'mM' / LEVEL_DENOM = the fraction of an op's range
HPARAMS_DEFAULT = {"translate_const": 250, "img_mean": FILL}
RANDOM_INTERPOLATION = (Image.BILINEAR, Image.BICUBIC)
DEFAULT_INTERPOLATION = Image.BICUBIC


# ---------------------------------------------------------------------------------------------- image ops
def _resample(kwargs):
    """The resampling filter of an affine op: one given, or a random one of a tuple (python ``random``)."""
    resample = kwargs.get("resample", DEFAULT_INTERPOLATION)
    return random.choice(resample) if isinstance(resample, (list, tuple)) else resample


def _affine(img, matrix, **kwargs):
    return img.transform(img.size, Image.AFFINE, matrix, resample=_resample(kwargs),
                         fillcolor=kwargs.get("fillcolor"))


def shear_x(img, factor, **kwargs):
    return _affine(img, (1, factor, 0, 0, 1, 0), **kwargs)


def shear_y(img, factor, **kwargs):
    return _affine(img, (1, 0, 0, factor, 1, 0), **kwargs)


def translate_x_rel(img, pct, **kwargs):
    return _affine(img, (1, 0, pct * img.size[0], 0, 1, 0), **kwargs)


def translate_y_rel(img, pct, **kwargs):
    return _affine(img, (1, 0, 0, 0, 1, pct * img.size[1]), **kwargs)


def translate_x_abs(img, pixels, **kwargs):
    return _affine(img, (1, 0, pixels, 0, 1, 0), **kwargs)


def translate_y_abs(img, pixels, **kwargs):
    return _affine(img, (1, 0, 0, 0, 1, pixels), **kwargs)


def rotate(img, degrees, **kwargs):
    return img.rotate(degrees, resample=_resample(kwargs), fillcolor=kwargs.get("fillcolor"))


def auto_contrast(img, **_):
    return ImageOps.autocontrast(img)


def invert(img, **_):
    return ImageOps.invert(img)


def equalize(img, **_):
    return ImageOps.equalize(img)


def solarize(img, thresh, **_):
    return ImageOps.solarize(img, thresh)


def solarize_add(img, add, thresh=128, **_):
    """Adds ``add`` to the pixels below ``thresh`` (clipped at 255); L and RGB images only."""
    if img.mode not in ("L", "RGB"):
        return img
    lut = [min(255, i + add) if i < thresh else i for i in range(256)]
    return img.point(lut * (3 if img.mode == "RGB" else 1))


def posterize(img, bits_to_keep, **_):
    """Keeps the ``bits_to_keep`` most significant bits. 0 bits: a black image (what Pillow < 12 returned for
    0; Pillow >= 12 raises, and so does timm's posterize there)."""
    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return img.point([0] * 256 * len(img.getbands()))
    return ImageOps.posterize(img, bits_to_keep)


def contrast(img, factor, **_):
    return ImageEnhance.Contrast(img).enhance(factor)


def color(img, factor, **_):
    return ImageEnhance.Color(img).enhance(factor)


def brightness(img, factor, **_):
    return ImageEnhance.Brightness(img).enhance(factor)


def sharpness(img, factor, **_):
    return ImageEnhance.Sharpness(img).enhance(factor)


# ------------------------------------------------------------------------------------ magnitude -> argument
def _negate_half(v):
    """``-v`` with probability 1/2 (one python ``random.random()`` draw)."""
    return -v if random.random() > 0.5 else v


def _rotate_arg(level, _):
    return (_negate_half(level / LEVEL_DENOM * 30.0),)  # degrees in [-30, 30]


def _enhance_arg(level, _):
    return (level / LEVEL_DENOM * 1.8 + 0.1,)  # [0.1, 1.9]


def _enhance_increasing_arg(level, _):
    return (max(0.1, 1.0 + _negate_half(level / LEVEL_DENOM * 0.9)),)  # away from 1.0 as level grows


def _shear_arg(level, _):
    return (_negate_half(level / LEVEL_DENOM * 0.3),)


def _translate_abs_arg(level, hparams):
    return (_negate_half(level / LEVEL_DENOM * float(hparams["translate_const"])),)


def _translate_rel_arg(level, hparams):
    return (_negate_half(level / LEVEL_DENOM * hparams.get("translate_pct", 0.45)),)


def _posterize_arg(level, _):
    return (int(level / LEVEL_DENOM * 4),)  # 0..4 bits kept


def _posterize_increasing_arg(level, hparams):
    return (4 - _posterize_arg(level, hparams)[0],)  # 4..0 bits kept


def _posterize_original_arg(level, _):
    return (int(level / LEVEL_DENOM * 4) + 4,)  # 4..8 bits kept


def _solarize_arg(level, _):
    return (min(256, int(level / LEVEL_DENOM * 256)),)


def _solarize_increasing_arg(level, hparams):
    return (256 - _solarize_arg(level, hparams)[0],)


def _solarize_add_arg(level, _):
    return (min(128, int(level / LEVEL_DENOM * 110)),)


# name -> (image op, level -> args or None)
OPS = {
    "AutoContrast": (auto_contrast, None),
    "Equalize": (equalize, None),
    "Invert": (invert, None),
    "Rotate": (rotate, _rotate_arg),
    "Posterize": (posterize, _posterize_arg),
    "PosterizeIncreasing": (posterize, _posterize_increasing_arg),
    "PosterizeOriginal": (posterize, _posterize_original_arg),
    "Solarize": (solarize, _solarize_arg),
    "SolarizeIncreasing": (solarize, _solarize_increasing_arg),
    "SolarizeAdd": (solarize_add, _solarize_add_arg),
    "Color": (color, _enhance_arg),
    "ColorIncreasing": (color, _enhance_increasing_arg),
    "Contrast": (contrast, _enhance_arg),
    "ContrastIncreasing": (contrast, _enhance_increasing_arg),
    "Brightness": (brightness, _enhance_arg),
    "BrightnessIncreasing": (brightness, _enhance_increasing_arg),
    "Sharpness": (sharpness, _enhance_arg),
    "SharpnessIncreasing": (sharpness, _enhance_increasing_arg),
    "ShearX": (shear_x, _shear_arg),
    "ShearY": (shear_y, _shear_arg),
    "TranslateX": (translate_x_abs, _translate_abs_arg),
    "TranslateY": (translate_y_abs, _translate_abs_arg),
    "TranslateXRel": (translate_x_rel, _translate_rel_arg),
    "TranslateYRel": (translate_y_rel, _translate_rel_arg),
}


class AugmentOp:
    """One named op applied with probability ``prob`` at magnitude ``magnitude`` (0..10, timm's 'M').

    ``hparams``: ``img_mean`` (fill colour of affine ops), ``interpolation`` (a PIL filter; default a random
    one of bilinear/bicubic per call), ``translate_const`` / ``translate_pct``, ``magnitude_std`` (gaussian
    noise on the magnitude; ``inf``: uniform in [0, M]) and ``magnitude_max`` (upper clip, default 10).
    Draws per call, in order (python ``random``): apply?, magnitude noise, sign, resampling filter.
    """

    def __init__(self, name, prob=0.5, magnitude=10, hparams=None):
        if name not in OPS:
            raise DataError(f"unknown augmentation op '{name}'; accepted: {', '.join(OPS)}")
        hparams = hparams or HPARAMS_DEFAULT
        self.name, self.prob, self.magnitude = name, prob, magnitude
        self.aug_fn, self.level_fn = OPS[name]
        self.hparams = dict(hparams)
        self.kwargs = {"fillcolor": hparams.get("img_mean", FILL),
                       "resample": hparams.get("interpolation", RANDOM_INTERPOLATION)}
        self.magnitude_std = self.hparams.get("magnitude_std", 0)
        self.magnitude_max = self.hparams.get("magnitude_max", None)

    def __call__(self, img):
        if self.prob < 1.0 and random.random() > self.prob:
            return img
        magnitude = self.magnitude
        if self.magnitude_std == float("inf"):
            magnitude = random.uniform(0, magnitude)
        elif self.magnitude_std > 0:
            magnitude = random.gauss(magnitude, self.magnitude_std)
        magnitude = max(0.0, min(magnitude, self.magnitude_max or LEVEL_DENOM))
        args = self.level_fn(magnitude, self.hparams) if self.level_fn is not None else ()
        return self.aug_fn(img, *args, **self.kwargs)

    def __repr__(self):
        return f"AugmentOp(name={self.name}, p={self.prob}, m={self.magnitude}, mstd={self.magnitude_std})"


# ------------------------------------------------------------------------------------------- AutoAugment
_V0 = [
    [("Equalize", 0.8, 1), ("ShearY", 0.8, 4)], [("Color", 0.4, 9), ("Equalize", 0.6, 3)],
    [("Color", 0.4, 1), ("Rotate", 0.6, 8)], [("Solarize", 0.8, 3), ("Equalize", 0.4, 7)],
    [("Solarize", 0.4, 2), ("Solarize", 0.6, 2)], [("Color", 0.2, 0), ("Equalize", 0.8, 8)],
    [("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)], [("ShearX", 0.2, 9), ("Rotate", 0.6, 8)],
    [("Color", 0.6, 1), ("Equalize", 1.0, 2)], [("Invert", 0.4, 9), ("Rotate", 0.6, 0)],
    [("Equalize", 1.0, 9), ("ShearY", 0.6, 3)], [("Color", 0.4, 7), ("Equalize", 0.6, 0)],
    [("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)], [("Solarize", 0.6, 8), ("Color", 0.6, 9)],
    [("Solarize", 0.2, 4), ("Rotate", 0.8, 9)], [("Rotate", 1.0, 7), ("TranslateYRel", 0.8, 9)],
    [("ShearX", 0.0, 0), ("Solarize", 0.8, 4)], [("ShearY", 0.8, 0), ("Color", 0.6, 4)],
    [("Color", 1.0, 0), ("Rotate", 0.6, 2)], [("Equalize", 0.8, 4), ("Equalize", 0.0, 8)],
    [("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)], [("ShearY", 0.4, 7), ("SolarizeAdd", 0.6, 7)],
    [("Posterize", 0.8, 2), ("Solarize", 0.6, 10)], [("Solarize", 0.6, 8), ("Equalize", 0.6, 1)],
    [("Color", 0.8, 6), ("Rotate", 0.4, 5)],
]
# the AutoAugment paper's ImageNet policy (arXiv:1805.09501, its appendix)
_ORIGINAL = [
    [("PosterizeOriginal", 0.4, 8), ("Rotate", 0.6, 9)], [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
    [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)], [("PosterizeOriginal", 0.6, 7), ("PosterizeOriginal", 0.6, 6)],
    [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)], [("Equalize", 0.4, 4), ("Rotate", 0.8, 8)],
    [("Solarize", 0.6, 3), ("Equalize", 0.6, 7)], [("PosterizeOriginal", 0.8, 5), ("Equalize", 1.0, 2)],
    [("Rotate", 0.2, 3), ("Solarize", 0.6, 8)], [("Equalize", 0.6, 8), ("PosterizeOriginal", 0.4, 6)],
    [("Rotate", 0.8, 8), ("Color", 0.4, 0)], [("Rotate", 0.4, 9), ("Equalize", 0.6, 2)],
    [("Equalize", 0.0, 7), ("Equalize", 0.8, 8)], [("Invert", 0.6, 4), ("Equalize", 1.0, 8)],
    [("Color", 0.6, 4), ("Contrast", 1.0, 8)], [("Rotate", 0.8, 8), ("Color", 1.0, 2)],
    [("Color", 0.8, 8), ("Solarize", 0.8, 7)], [("Sharpness", 0.4, 7), ("Invert", 0.6, 8)],
    [("ShearX", 0.6, 5), ("Equalize", 1.0, 9)], [("Color", 0.4, 0), ("Equalize", 0.6, 3)],
    [("Equalize", 0.4, 7), ("Solarize", 0.2, 4)], [("Solarize", 0.6, 5), ("AutoContrast", 0.6, 5)],
    [("Invert", 0.6, 4), ("Equalize", 1.0, 8)], [("Color", 0.6, 4), ("Contrast", 1.0, 8)],
    [("Equalize", 0.8, 8), ("Equalize", 0.6, 3)],
]


def _with_posterize(policy, name):
    return [[(name if op.startswith("Posterize") else op, p, m) for op, p, m in sub] for sub in policy]


# name -> sub-policies; the 'r' variants use the research code's Posterize (bits dropped grow with M)
AA_POLICIES = {
    "v0": _V0,
    "v0r": _with_posterize(_V0, "PosterizeIncreasing"),
    "original": _ORIGINAL,
    "originalr": _with_posterize(_ORIGINAL, "PosterizeIncreasing"),
}


class AutoAugment:
    """One sub-policy drawn uniformly (python ``random.choice``) per image, its ops applied in order."""

    def __init__(self, policy):
        self.policy = policy

    def __call__(self, img):
        for op in random.choice(self.policy):
            img = op(img)
        return img


def _sections(config_str, first):
    parts = config_str.split("-")
    if parts[0] not in first:
        raise DataError(f"augmentation config '{config_str}' must start with one of {', '.join(first)}")
    out = []
    for part in parts[1:]:
        split = re.split(r"(\d.*)", part)
        if len(split) >= 2:
            out.append((split[0], split[1]))
    return parts[0], out


def auto_augment_transform(config_str, hparams=None):
    """AutoAugment from timm's config string: ``<policy>[-mstd<float>]``, policy ``v0``, ``v0r``, ``original``
    or ``originalr`` (e.g. ``original-mstd0.5``). ``hparams``: see :class:`AugmentOp`. PIL image -> PIL image.
    An unknown policy or section is a ``DataError``."""
    hparams = dict(hparams) if hparams else dict(HPARAMS_DEFAULT)
    name, sections = _sections(config_str, tuple(AA_POLICIES))
    for key, value in sections:
        if key != "mstd":
            raise DataError(f"unknown AutoAugment config section '{key}{value}' in '{config_str}' (accepted: mstd)")
        hparams.setdefault("magnitude_std", float(value))
    return AutoAugment([[AugmentOp(*op, hparams=hparams) for op in sub] for sub in AA_POLICIES[name]])


# ------------------------------------------------------------------------------------------- RandAugment
RAND_TRANSFORMS = ["AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
                   "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel",
                   "TranslateYRel"]
RAND_INCREASING_TRANSFORMS = ["AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing",
                              "SolarizeIncreasing", "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing",
                              "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel",
                              "TranslateYRel"]


class RandAugment:
    """``num_layers`` ops drawn per image (``np.random.choice``, with replacement), each then applied with
    its probability."""

    def __init__(self, ops, num_layers=2):
        self.ops, self.num_layers = ops, num_layers

    def __call__(self, img):
        for i in np.random.choice(len(self.ops), self.num_layers, replace=True):
            img = self.ops[i](img)
        return img


def rand_augment_transform(config_str, hparams=None):
    """RandAugment from timm's config string ``rand[-m<int>][-n<int>][-p<float>][-mstd<float>][-mmax<int>]
    [-inc<0|1>]`` (defaults m10, n2, p0.5, mstd0, inc0; mstd > 100 samples the magnitude uniformly in [0, M]),
    e.g. DeiT's ``rand-m9-mstd0.5-inc1``. ``hparams``: see :class:`AugmentOp`. PIL image -> PIL image.
    An unknown section is a ``DataError``."""
    hparams = dict(hparams) if hparams else dict(HPARAMS_DEFAULT)
    magnitude, num_layers, increasing, prob = LEVEL_DENOM, 2, False, 0.5
    _, sections = _sections(config_str, ("rand",))
    for key, value in sections:
        if key == "mstd":
            mstd = float(value)
            hparams.setdefault("magnitude_std", float("inf") if mstd > 100 else mstd)
        elif key == "mmax":
            hparams.setdefault("magnitude_max", int(value))
        elif key == "inc":
            increasing = bool(int(value))
        elif key == "m":
            magnitude = int(value)
        elif key == "n":
            num_layers = int(value)
        elif key == "p":
            prob = float(value)
        else:
            raise DataError(f"unknown RandAugment config section '{key}{value}' in '{config_str}' "
                            "(accepted: m, n, p, mstd, mmax, inc)")
    names = RAND_INCREASING_TRANSFORMS if increasing else RAND_TRANSFORMS
    return RandAugment([AugmentOp(n, prob=prob, magnitude=magnitude, hparams=hparams) for n in names], num_layers)


def augment_transform(config_str, hparams=None):
    """``rand...`` -> RandAugment, a policy name -> AutoAugment (as timm's ``create_transform`` picks)."""
    if config_str.startswith("rand"):
        return rand_augment_transform(config_str, hparams)
    return auto_augment_transform(config_str, hparams)
