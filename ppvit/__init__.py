"""ppvit: Conv2Former, ConViT, CoAtNet, ConvMixer and DilateFormer in PaddlePaddle.

    import ppvit
    model = ppvit.create_model("convit_tiny", num_classes=10)

The model API (``create_model``, ``list_models``, ``register_model``) and the subpackages load on first use,
so that the ``ppvit`` command can set ``OMP_NUM_THREADS`` before Paddle is imported (``ppvit.commands``).
"""
import importlib

from .utils.quiet import tune_cpu_math as _tune_cpu_math

# before anything imports Paddle: its bundled MKL takes its generic (several times slower) matrix path on AMD
# CPUs unless told otherwise; a no-op elsewhere, a value the user set is kept, and harmless once Paddle is in
_tune_cpu_math()

__version__ = "0.1.0"

_MODEL_API = ("create_model", "list_models", "register_model", "get_model_cfg", "ModelCfg")
_SUBPACKAGES = ("commands", "constants", "data", "deploy", "engine", "explain", "io", "kernels", "losses", "models",
               "utils")

__all__ = ["ModelCfg", "create_model", "get_model_cfg", "list_models", "register_model", "__version__"]


def __getattr__(name):
    if name in _MODEL_API:
        return getattr(importlib.import_module(".models", __name__), name)
    if name in _SUBPACKAGES:
        return importlib.import_module("." + name, __name__)
    raise AttributeError(f"module 'ppvit' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_MODEL_API) | set(_SUBPACKAGES))
