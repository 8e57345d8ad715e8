"""Datasets from config: CIFAR-10 (or the embedded digits archive) read by
``paddle.vision.datasets.Cifar10``, or your own images (``folder``/``filelist``, see ``ppvit.data.folder``),
with a notebook pipeline and ``Data.limit`` applied."""
import os
import socket
import threading

import numpy as np
import paddle
from paddle.io import Dataset
from paddle.vision.datasets import Cifar10

from .archive import CIFAR10_CLASSES, inspect_cifar_archive
from .digits import DIGITS_CLASSES, ensure_digits_archive
from .errors import DataError
from .transforms import build_transform, image_backend

CIFAR10_FILENAME = "cifar-10-python.tar.gz"
CIFAR10_URL = "https://dataset.bj.bcebos.com/cifar/cifar-10-python.tar.gz"  # Paddle's mirror
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
DATASETS = ("cifar10", "digits", "folder", "filelist")


def default_cifar_path():
    """Where ``Cifar10(data_file=None)`` looks: Paddle's dataset cache."""
    from paddle.dataset.common import DATA_HOME

    return os.path.join(DATA_HOME, "cifar", CIFAR10_FILENAME)


def _missing_message(path, reason=""):
    return (
        f"CIFAR-10 archive not found: {path}{reason}. Download {CIFAR10_FILENAME} "
        f"(https://www.cs.toronto.edu/~kriz/{CIFAR10_FILENAME}, or Paddle's mirror {CIFAR10_URL}) and put it "
        f"at that path, or point the config at your copy with Data.data_file (e.g. "
        f"-o Data.data_file=/path/to/{CIFAR10_FILENAME}). Offline? -o Data.dataset=digits uses the embedded "
        "dataset instead."
    )


def _reachable(url, timeout=3.0):
    """True when the download host accepts a TCP connection within ``timeout`` seconds. Paddle's own
    downloader has no timeout and retries, so without this check an offline machine could hang."""
    host = url.split("/")[2]
    result = []

    def probe():
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result.append(True)
        except OSError:
            pass

    # the name lookup itself has no timeout: run the probe in a thread we can stop waiting for
    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 1.0)
    return bool(result)


def resolve_cifar_file(data_file=None, download=True):
    """Path of the CIFAR-10 archive. An explicit ``data_file`` must exist (never downloaded, as in
    ``Cifar10``); ``None`` means Paddle's cache path, downloaded there when absent and the network allows
    (``PPVIT_OFFLINE=1`` forbids trying). Raises DataError saying where to put the archive."""
    if data_file:
        path = os.path.abspath(os.path.expanduser(os.fspath(data_file)))
        if os.path.isdir(path):  # a folder holding the archive is fine too
            path = os.path.join(path, CIFAR10_FILENAME)
        if not os.path.isfile(path):
            raise DataError(_missing_message(path))
        return path
    path = default_cifar_path()
    if os.path.isfile(path):
        return path
    if not download or os.environ.get("PPVIT_OFFLINE", "") not in ("", "0"):
        raise DataError(_missing_message(path, " (Data.data_file is null: that is Paddle's cache path; "
                                               "PPVIT_OFFLINE forbids downloading)"))
    if not _reachable(CIFAR10_URL):
        raise DataError(_missing_message(path, f" (Data.data_file is null and {CIFAR10_URL} cannot be reached)"))
    try:
        from paddle.dataset.common import download as paddle_download

        return paddle_download(CIFAR10_URL, "cifar", CIFAR10_MD5)
    except Exception as e:  # network errors, retry limit, md5 mismatch
        raise DataError(_missing_message(path, f" (download failed: {type(e).__name__}: {e})")) from None


class CifarDataset(Dataset):
    """``paddle.vision.datasets.Cifar10`` yielding (CHW float32 ndarray, int64 label), with class names."""

    def __init__(self, data_file, mode, transform, backend="cv2", class_names=None):
        label_names = inspect_cifar_archive(data_file, mode)
        try:
            self.cifar = Cifar10(data_file=data_file, mode=mode, transform=transform, download=False, backend=backend)
        except Exception as e:  # passed the inspection yet unreadable: a batch that is not a CIFAR pickle
            raise DataError(
                f"cannot load the CIFAR-10 archive {data_file} ({type(e).__name__}: {e}); replace it with a good "
                f"copy of cifar-10-python.tar.gz"
            ) from None
        if len(self.cifar) == 0:
            raise DataError(f"the CIFAR-10 archive {data_file} holds no {mode} samples")
        self.data_file, self.mode = data_file, mode
        self.class_names = list(class_names or label_names or CIFAR10_CLASSES)

    def __len__(self):
        return len(self.cifar)

    def __getitem__(self, idx):
        image, label = self.cifar[idx]
        if isinstance(image, paddle.Tensor):
            image = image.numpy()
        return np.asarray(image, dtype=np.float32), label


class LimitedDataset(Dataset):
    """The first ``limit`` samples of ``dataset`` (``Data.limit``), keeping its ``class_names``."""

    def __init__(self, dataset, limit):
        self.dataset = dataset
        self.limit = min(int(limit), len(dataset))
        self.class_names = list(dataset.class_names)

    def __len__(self):
        return self.limit

    def __getitem__(self, idx):
        if not -self.limit <= idx < self.limit:
            raise IndexError(f"index {idx} out of range for {self.limit} samples")
        return self.dataset[idx % self.limit]


def build_dataset(data_cfg, mode, image_size=None):
    """The ``mode`` ('train' or 'test') split described by a config's ``Data`` section (a dict), its images
    resized to ``image_size`` (a config's ``Arch.img_size``; None: the pipeline's own size)."""
    if mode not in ("train", "test"):
        raise DataError(f"mode must be 'train' or 'test', got '{mode}'")
    name = data_cfg.get("dataset", "cifar10")
    if name not in DATASETS:
        raise DataError(f"unknown Data.dataset '{name}'; accepted: {', '.join(DATASETS)}")
    # the one spot that picks the preprocessing (the same for every dataset): Data.transform's preset, its
    # lists replaced by Data.train_ops / Data.eval_ops, at image_size (a config's Arch.img_size)
    transform = build_transform(data_cfg, mode, image_size)
    backend = image_backend(data_cfg)
    limit = data_cfg.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"Data.limit must be a positive integer or null, got {limit!r}")

    if name in ("folder", "filelist"):
        from .folder import build_image_dataset

        dataset = build_image_dataset(data_cfg, mode, transform, backend)
    elif name == "digits":
        dataset = CifarDataset(ensure_digits_archive(data_cfg.get("data_file")), mode, transform,
                               backend, class_names=DIGITS_CLASSES)
    else:
        dataset = CifarDataset(resolve_cifar_file(data_cfg.get("data_file")), mode, transform, backend)
    return LimitedDataset(dataset, limit) if limit is not None else dataset
