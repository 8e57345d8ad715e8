"""ppvit: Conv2Former, ConViT, CoAtNet, ConvMixer and DilateFormer in PaddlePaddle."""
__version__ = "0.1.0"

from .models import ModelCfg, create_model, get_model_cfg, list_models, register_model  # noqa: E402,F401
