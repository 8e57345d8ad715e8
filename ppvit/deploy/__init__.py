"""Deployment: export a model for Paddle Inference (+ ONNX), run it, classify image files with it."""
from .export import default_preprocess, export_model, meta_path, read_meta
from .predictor import (
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
