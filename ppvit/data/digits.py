"""The embedded offline dataset: scikit-learn's handwritten digits (1797 8x8 images that ship with
scikit-learn), rendered to 32x32 RGB and written as a CIFAR-10 format archive, so that the same
``paddle.vision.datasets.Cifar10`` loader reads it. Used by the quick start, CI and the smoke tests."""
import os

import cv2
import numpy as np

from .archive import write_cifar_archive

DIGITS_CLASSES = [str(i) for i in range(10)]
DIGITS_FILENAME = "digits-32x32-cifar-format.tar.gz"
TEST_FRACTION = 0.2
SPLIT_SEED = 0


def default_digits_path():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "ppvit", DIGITS_FILENAME)


def render_digits():
    """All 1797 digits as (uint8 images N x 32 x 32 x 3, int labels N)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    # 0..16 ink levels -> 0..255, white digit on black as in the 8x8 source
    small = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    big = np.stack([cv2.resize(im, (32, 32), interpolation=cv2.INTER_LINEAR) for im in small])
    rgb = np.repeat(big[..., None], 3, axis=-1)  # N, 32, 32 -> N, 32, 32, 3
    return rgb, digits.target.astype(np.int64)


def split_digits(labels, test_fraction=TEST_FRACTION, seed=SPLIT_SEED):
    """Deterministic stratified split (like scikit-learn's: ceil(fraction * N) test samples, 360 of 1797),
    shared out over the classes in proportion, then a fixed-seed shuffle inside each class.
    Returns (train indices, test indices), each sorted so the archive keeps the source order."""
    classes, counts = np.unique(labels, return_counts=True)
    n_test = int(np.ceil(test_fraction * len(labels)))
    share = counts * n_test / len(labels)
    per_class = np.floor(share).astype(int)
    # the leftover samples go to the classes with the largest remainders (stable: ties by class order)
    per_class[np.argsort(-(share - per_class), kind="stable")[: n_test - per_class.sum()]] += 1
    rng = np.random.RandomState(seed)
    train, test = [], []
    for c, k in zip(classes, per_class):
        idx = rng.permutation(np.flatnonzero(labels == c))
        test.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.array(train)), np.sort(np.array(test))


def ensure_digits_archive(path=None):
    """Return the path of the digits archive, writing it first (atomically) if it is not there yet.
    ``path`` None: ``~/.cache/ppvit/digits-32x32-cifar-format.tar.gz``."""
    path = os.path.abspath(os.path.expanduser(os.fspath(path) if path else default_digits_path()))
    if os.path.isfile(path):
        return path
    images, labels = render_digits()
    train, test = split_digits(labels)
    # concurrent writers (several ranks) are safe: each writes its own temp file, then renames
    return write_cifar_archive(path, images[train], labels[train], images[test], labels[test], DIGITS_CLASSES)
