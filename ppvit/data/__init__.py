"""Data: CIFAR-10 through ``paddle.vision.datasets.Cifar10``, image pipelines as data (the notebooks' presets
and timm's augmentation without torch: ``create_transform``, ``rand_augment_transform``,
``auto_augment_transform``, ``RandomErasing``), timm's batch-level ``Mixup``/CutMix, the embedded offline
``digits`` dataset (scikit-learn's digits in CIFAR-10 format) and your own images as a class-per-subfolder
tree or PaddleClas file lists (``ppvit.data.folder``).

The names below load their module on first use (as ``ppvit`` does its subpackages), so that Paddle-free parts
such as ``python -m ppvit.data.demo`` (the offline photo demo) do not import Paddle.
"""
import importlib

from .errors import DataError

# public name -> the module that defines it
_EXPORTS = {
    "CIFAR10_CLASSES": "archive", "inspect_cifar_archive": "archive", "write_cifar_archive": "archive",
    "DIGITS_CLASSES": "digits", "default_digits_path": "digits", "ensure_digits_archive": "digits",
    "PIPELINES": "transforms", "build_transform": "transforms", "denormalize": "transforms",
    "mean_std": "transforms",
    "CifarDataset": "cifar", "LimitedDataset": "cifar", "build_dataset": "cifar", "default_cifar_path": "cifar",
    "resolve_cifar_file": "cifar",
    "Mixup": "mix", "build_batch_mixer": "mix",
    "RandomErasing": "random_erasing", "rand_augment_transform": "auto_augment",
    "auto_augment_transform": "auto_augment", "create_transform": "transforms_factory",
    "PRESETS": "transforms", "pipeline_spec": "transforms", "split_normalization": "transforms",
    "data_config": "transforms",
    "ImageFileDataset": "folder", "dataset_class_names": "folder", "read_file_list": "folder",
    "read_label_file": "folder", "skipped_images": "folder",
}

__all__ = ["DataError", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module("." + _EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
