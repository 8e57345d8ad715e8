"""Data: CIFAR-10 through ``paddle.vision.datasets.Cifar10``, the notebooks' transforms, batch-level
MixUp/CutMix, the embedded offline ``digits`` dataset (scikit-learn's digits in CIFAR-10 format) and your
own images as a class-per-subfolder tree or PaddleClas file lists (``ppvit.data.folder``)."""
from ..utils.quiet import quiet_paddle_import as _quiet_paddle_import

# `python -m ppvit.data.demo` imports Paddle through this package: without its import notices, as the tools
# (a no-op when Paddle is already imported, e.g. by the ppvit command)
_quiet_paddle_import(set_threads=False)

from .errors import DataError  # noqa: E402
from .archive import CIFAR10_CLASSES, inspect_cifar_archive, write_cifar_archive  # noqa: E402
from .digits import DIGITS_CLASSES, default_digits_path, ensure_digits_archive  # noqa: E402
from .transforms import PIPELINES, build_transform, denormalize, mean_std  # noqa: E402
from .cifar import CifarDataset, LimitedDataset, build_dataset, default_cifar_path, resolve_cifar_file  # noqa: E402
from .mix import BatchMixer, build_batch_mixer  # noqa: E402
from .folder import ImageFileDataset, dataset_class_names, read_file_list, read_label_file, skipped_images  # noqa: E402

__all__ = [
    "DataError", "CIFAR10_CLASSES", "DIGITS_CLASSES", "PIPELINES", "BatchMixer", "CifarDataset", "LimitedDataset",
    "build_batch_mixer", "build_dataset", "build_transform", "default_cifar_path", "default_digits_path",
    "denormalize", "ensure_digits_archive", "inspect_cifar_archive", "mean_std", "resolve_cifar_file",
    "write_cifar_archive", "ImageFileDataset", "dataset_class_names", "read_file_list", "read_label_file",
    "skipped_images",
]
