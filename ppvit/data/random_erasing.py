"""Random Erasing (Zhong et al. 2017, arXiv:1708.04896) with timm's semantics (``timm/data/random_erasing.py``),
on normalised CHW (or NCHW) float32 numpy arrays."""
import math
import random

import numpy as np

from .errors import DataError


class RandomErasing:
    """Erases up to ``max_count`` random rectangles of a normalised image, with probability ``probability``.

    Args: ``probability``; ``min_area``/``max_area``: the fraction of the image a box covers (divided by the
    box count); ``min_aspect``/``max_aspect`` (default ``1/min_aspect``): its h/w range, drawn log-uniformly;
    ``mode``: ``const`` (zeros), ``rand`` (one normal colour per box) or ``pixel`` (normal noise per pixel);
    ``min_count``/``max_count``: boxes per image, drawn uniformly; ``num_splits``: on a batch, the first
    ``N // num_splits`` images are left clean (timm's AugMix split).

    Call: ``x`` CHW or NCHW float32 ndarray -> the same array, erased in place (returned).

    Random draws, as timm's: python ``random`` for apply?, count, area, aspect and position, in timm's
    order. The fill noise of ``rand``/``pixel`` is ``np.random.standard_normal`` (float32) where timm calls
    ``torch.Tensor.normal_()``; the fixture script feeds timm the same numpy draws, so the outputs are equal.
    """

    def __init__(self, probability=0.5, min_area=0.02, max_area=1 / 3, min_aspect=0.3, max_aspect=None,
                 mode="const", min_count=1, max_count=None, num_splits=0):
        mode = (mode or "const").lower()
        if mode not in ("const", "rand", "pixel"):
            raise DataError(f"RandomErasing mode must be const, rand or pixel, got '{mode}'")
        if not 0.0 <= probability <= 1.0:
            raise DataError(f"RandomErasing probability must be in [0, 1], got {probability}")
        self.probability, self.min_area, self.max_area = probability, min_area, max_area
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))
        self.min_count = min_count
        self.max_count = max_count or min_count
        self.num_splits, self.mode = num_splits, mode

    def _fill(self, chan, h, w):
        if self.mode == "pixel":
            return np.random.standard_normal((chan, h, w)).astype(np.float32)
        if self.mode == "rand":
            return np.random.standard_normal((chan, 1, 1)).astype(np.float32)
        return np.float32(0.0)

    def _erase(self, img):
        chan, img_h, img_w = img.shape
        if random.random() > self.probability:
            return
        area = img_h * img_w
        count = self.min_count if self.min_count == self.max_count else random.randint(self.min_count,
                                                                                        self.max_count)
        for _ in range(count):
            for _attempt in range(10):
                target_area = random.uniform(self.min_area, self.max_area) * area / count
                aspect = math.exp(random.uniform(*self.log_aspect_ratio))
                h = int(round(math.sqrt(target_area * aspect)))
                w = int(round(math.sqrt(target_area / aspect)))
                if w < img_w and h < img_h:
                    top = random.randint(0, img_h - h)
                    left = random.randint(0, img_w - w)
                    img[:, top:top + h, left:left + w] = self._fill(chan, h, w)
                    break

    def __call__(self, x):
        if not isinstance(x, np.ndarray) or x.ndim not in (3, 4):
            raise DataError(f"RandomErasing takes a CHW or NCHW ndarray, got {type(x).__name__} "
                            f"{getattr(x, 'shape', '')}")
        if x.ndim == 3:
            self._erase(x)
        else:
            start = len(x) // self.num_splits if self.num_splits > 1 else 0
            for i in range(start, len(x)):
                self._erase(x[i])
        return x

    def __repr__(self):
        return f"RandomErasing(p={self.probability}, mode={self.mode}, count=({self.min_count}, {self.max_count}))"
