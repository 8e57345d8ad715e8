"""Writing the CIFAR-10 python archive format, so that ``paddle.vision.datasets.Cifar10`` reads it.

The format (https://www.cs.toronto.edu/~kriz/cifar.html): a tar.gz holding ``cifar-10-batches-py/``
``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and ``batches.meta``; each batch is a pickled dict
with ``b'data'`` (N x 3072 uint8, each row a CHW-flattened 32x32 RGB image) and ``b'labels'``.
The original pickles come from Python 2 and are read with ``encoding='bytes'``, hence bytes keys here.
"""
import io
import os
import pickle
import re
import tarfile

import numpy as np

from ..io import atomic_path
from .errors import DataError

ARCHIVE_DIR = "cifar-10-batches-py"
NUM_TRAIN_BATCHES = 5
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _check_images(images, labels, what):
    images = np.asarray(images)
    labels = np.asarray(labels).reshape(-1)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise ValueError(f"{what} images must be uint8 of shape (N, 32, 32, 3), got {images.dtype} {images.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{what}: {len(images)} images but {len(labels)} labels")
    return images, labels


def _batch_bytes(images, labels, batch_label):
    # N, H, W, C -> N, C*H*W: the CIFAR row layout (all red, then green, then blue)
    data = np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))
    batch = {
        b"batch_label": batch_label.encode(),
        b"labels": [int(v) for v in labels],
        b"data": data,
        b"filenames": [f"{i:05d}.png".encode() for i in range(len(images))],
    }
    return pickle.dumps(batch, protocol=2)


def write_cifar_archive(path, images, labels, test_images, test_labels, label_names=None):
    """Write a CIFAR-10 format ``tar.gz`` at ``path`` (atomically) and return the path.

    ``images``/``test_images``: uint8 arrays (N, 32, 32, 3), RGB; ``labels``: ints. The training images are
    split over the five ``data_batch_*`` files in order, so the loader reads them back in the same order.
    """
    images, labels = _check_images(images, labels, "train")
    test_images, test_labels = _check_images(test_images, test_labels, "test")
    if label_names is None:
        label_names = [str(i) for i in range(int(max(labels.max(initial=0), test_labels.max(initial=0))) + 1)]
    members = []
    chunks = np.array_split(np.arange(len(images)), NUM_TRAIN_BATCHES)
    for i, idx in enumerate(chunks, start=1):
        members.append((f"data_batch_{i}", _batch_bytes(images[idx], labels[idx], f"training batch {i} of 5")))
    members.append(("test_batch", _batch_bytes(test_images, test_labels, "testing batch 1 of 1")))
    meta = {
        b"label_names": [str(n) for n in label_names],
        b"num_cases_per_batch": max(len(c) for c in chunks),
        b"num_vis": 3072,
    }
    members.append(("batches.meta", pickle.dumps(meta, protocol=2)))

    path = os.fspath(path)
    with atomic_path(path) as tmp:
        with tarfile.open(tmp, "w:gz") as tar:
            folder = tarfile.TarInfo(ARCHIVE_DIR)
            folder.type, folder.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(folder)
            for name, payload in members:
                info = tarfile.TarInfo(f"{ARCHIVE_DIR}/{name}")
                info.size, info.mode = len(payload), 0o644
                tar.addfile(info, io.BytesIO(payload))
    return path


def inspect_cifar_archive(path, mode):
    """Check that ``path`` is a CIFAR-10 archive holding the batches of ``mode`` and return its
    ``label_names`` (None when it has no ``batches.meta``). Raises DataError naming what is wrong.

    Paddle's loader would otherwise fail with a bare tarfile/pickle error, or silently load zero samples
    when the batches are missing.
    """
    names, label_names = set(), None
    try:
        with tarfile.open(path, mode="r") as tar:
            for member in tar:
                base = os.path.basename(member.name)
                names.add(base)
                if base == "batches.meta" and member.isfile():
                    meta = pickle.load(tar.extractfile(member), encoding="bytes")
                    raw = meta.get(b"label_names", meta.get("label_names"))
                    if raw is not None:
                        label_names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    except (tarfile.TarError, EOFError, OSError, pickle.UnpicklingError, ValueError, AttributeError) as e:
        raise DataError(
            f"cannot read the CIFAR-10 archive {path} ({type(e).__name__}: {e}). It must be the python version "
            "of CIFAR-10, cifar-10-python.tar.gz (a tar.gz of cifar-10-batches-py/); the file may be truncated "
            "or something else. Replace it, or set Data.data_file to a good copy."
        ) from None
    if mode == "train":
        present = {n for n in names if re.fullmatch(r"data_batch_\d+", n)}
        expected = {f"data_batch_{i}" for i in range(1, NUM_TRAIN_BATCHES + 1)}
    else:
        present = {n for n in names if n == "test_batch"}
        expected = {"test_batch"}
    missing = sorted(expected - present)
    if missing:
        raise DataError(
            f"the CIFAR-10 archive {path} has no {', '.join(missing)} "
            f"(found: {', '.join(sorted(names)) or 'nothing'}); "
            "it is incomplete or not cifar-10-python.tar.gz. Replace it, or set Data.data_file to a good copy."
        )
    return label_names
