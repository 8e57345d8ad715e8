"""Deployment: export a model (Paddle Inference program + ONNX), verify and time each inference backend,
run the fastest verified one, classify image files with it."""
from .backends import AUTO, BACKENDS, bf16_support
from .export import default_preprocess, export_model, meta_path, read_meta
from .predictor import (
    BackendError,
    ImageReadError,
    Predictor,
    classify_files,
    expand_image_paths,
    format_result,
    preprocess_image,
    read_image,
    softmax,
)

__all__ = [
    "AUTO",
    "BACKENDS",
    "BackendError",
    "bf16_support",
    "ImageReadError",
    "Predictor",
    "classify_files",
    "default_preprocess",
    "expand_image_paths",
    "export_model",
    "format_result",
    "meta_path",
    "preprocess_image",
    "read_image",
    "read_meta",
    "softmax",
]
