from .registry import (ModelCfg, PretrainedWeightsError, create_model, get_model_cfg, is_model, list_models,
                       register_model)
from . import layers
from .features import FeatureGetterNet, FeatureInfo
# model families: importing a module registers its variants
from . import conv2former  # noqa: F401
from . import convit  # noqa: F401
from . import coatnet  # noqa: F401
from . import convmixer  # noqa: F401
from . import dilateformer  # noqa: F401
