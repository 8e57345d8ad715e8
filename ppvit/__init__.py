"""ppvit: Conv2Former, ConViT, CoAtNet, ConvMixer and DilateFormer in PaddlePaddle."""
__version__ = "0.1.0"

from .models import create_model, list_models, register_model  # noqa: E402,F401
