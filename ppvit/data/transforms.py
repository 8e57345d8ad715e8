"""The notebooks' image pipelines, built from ``paddle.vision.transforms`` exactly as the notebooks wrote
them, plus ``basic`` for the quick start.

Each pipeline also records which image type ``Cifar10`` must hand it (``backend``): notebooks 000 and 004
call ``paddle.vision.set_image_backend('cv2')`` (HWC uint8 ndarrays, OpenCV resizing), notebook 002 never
does, so its pipeline runs on PIL images (PIL resizing) as it did there.
"""
from dataclasses import dataclass
from typing import Callable

import numpy as np
import paddle.vision.transforms as T

from ..constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from .errors import DataError



def _conv2former_cifar(mode, size):
    # notebook 000 (train_tfm / test_tfm), at 32x32 by default
    if mode == "test":
        return T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)])
    return T.Compose([
        T.Resize((size, size)),
        T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        # The notebook had paddlex.transforms.MixupImage() here: it expects a detection sample dict, so
        # on a bare image it did nothing (and paddlex 3.x has no paddlex.transforms). Left out; real
        # MixUp/CutMix is batch-level (ppvit.data.mix, Data.mixup_alpha / Data.cutmix_alpha).
        T.RandomResizedCrop(size, scale=(0.6, 1.0)),
        # before ToTensor, as in the notebook: erases (to 0) on the HWC uint8 image
        T.RandomErasing(),
        T.RandomHorizontalFlip(0.5),
        T.RandomRotation(20),
        T.ToTensor(),
        T.Normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD),
    ])


def _convit(mode, size):
    # notebook 002: one pipeline for both splits. Normalize runs on 0-255 HWC pixels *before* ToTensor,
    # which then keeps the float array as is: inputs are (pixel - mean) / std with pixel in 0..255
    # (roughly -2..1100). Kept because weights trained by the notebook expect exactly this.
    return T.Compose([
        T.Resize(size=(size, size)),
        T.Normalize(mean=list(IMAGENET_DEFAULT_MEAN), std=list(IMAGENET_DEFAULT_STD), data_format="HWC"),
        T.ToTensor(),
    ])


def _dilateformer(mode, size):
    # notebook 004 (train_tfm / test_tfm), at 224x224 by default; train resizes to 230 then crops 224
    if mode == "test":
        return T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)])
    pre = int(round(size * 230 / 224))
    return T.Compose([
        T.Resize((pre, pre)),
        T.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
        T.RandomResizedCrop(size, scale=(0.6, 1.0)),
        T.RandomHorizontalFlip(0.5),
        T.RandomRotation(20),
        # paddlex.transforms.MixupImage() stood here: a no-op on bare images (see _conv2former_cifar)
        T.ToTensor(),
        T.Normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD),
    ])


def _basic(mode, size):
    return T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize(mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD)])


@dataclass(frozen=True)
class Pipeline:
    build: Callable  # (mode, image_size) -> paddle.vision.transforms.Compose
    default_size: int  # the notebook's image size
    backend: str  # image type Cifar10 passes in: 'cv2' (HWC uint8 ndarray) or 'pil'
    pixel_scale: float  # pixels are 0..pixel_scale when normalised: 1 after ToTensor, 255 before it


PIPELINES = {
    "conv2former_cifar": Pipeline(_conv2former_cifar, 32, "cv2", 1.0),
    "convit": Pipeline(_convit, 224, "pil", 255.0),
    "dilateformer": Pipeline(_dilateformer, 224, "cv2", 1.0),
    "basic": Pipeline(_basic, 32, "cv2", 1.0),
}


def get_pipeline(name):
    if name not in PIPELINES:
        raise DataError(f"unknown Data.transform '{name}'; accepted: {', '.join(PIPELINES)}")
    return PIPELINES[name]


def build_transform(name, mode="train", image_size=None):
    """The ``paddle.vision.transforms.Compose`` of pipeline ``name`` for ``mode`` ('train' or 'test').

    ``image_size`` None keeps the notebook's size (32 for conv2former_cifar/basic, 224 otherwise).
    """
    pipeline = get_pipeline(name)
    if mode not in ("train", "test"):
        raise DataError(f"mode must be 'train' or 'test', got '{mode}'")
    size = pipeline.default_size if image_size is None else int(image_size)
    if size < 1:
        raise DataError(f"Arch.img_size must be a positive integer, got {image_size}")
    return pipeline.build(mode, size)


class NormStats(tuple):
    """``(mean, std)`` of a pipeline's Normalize; ``pixel_scale`` tells what the un-normalised pixels
    span (1.0: 0..1 after ToTensor; 255.0: 0..255, notebook 002)."""

    def __new__(cls, mean, std, pixel_scale):
        obj = super().__new__(cls, (mean, std))
        obj.pixel_scale = pixel_scale
        return obj

    @property
    def mean(self):
        return self[0]

    @property
    def std(self):
        return self[1]


def mean_std(name):
    """Normalisation of pipeline ``name``: ``mean, std = mean_std(name)``, plus ``.pixel_scale``."""
    return NormStats(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, get_pipeline(name).pixel_scale)


def denormalize(images, name):
    """Undo pipeline ``name``'s normalisation for display: CHW or NCHW floats (ndarray or Tensor) ->
    HWC / NHWC float32 in [0, 1]."""
    x = np.asarray(images.numpy() if hasattr(images, "numpy") else images, dtype=np.float32)
    stats = mean_std(name)
    axis = x.ndim - 3  # channel axis: 0 for CHW, 1 for NCHW
    shape = [1] * x.ndim
    shape[axis] = 3
    x = x * np.reshape(stats.std, shape) + np.reshape(stats.mean, shape)
    x = np.clip(x / stats.pixel_scale, 0.0, 1.0)
    return np.moveaxis(x, axis, -1)  # ... C, H, W -> ... H, W, C
