"""One registry, one entry point: ``register_model`` / ``create_model`` / ``list_models`` / ``get_model_cfg``.

Every registered name carries a ``ModelCfg``: its metadata as data (timm's ``pretrained_cfg``): the input
size and whether it is fixed, the normalisation and resize the weights expect, the default class count,
the classifier and first-conv names, where the architecture comes from, and the family's
``checkpoint_filter_fn`` for official PyTorch weights (and ``pretrained_filter_fn``, which fits Paddle weights to
another input size). Data pipelines, export, the zoo table and the tests
read it instead of guessing.
"""
import dataclasses
import difflib
import fnmatch
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from ..errors import PpvitError

__all__ = ["ModelCfg", "PretrainedWeightsError", "register_model", "create_model", "list_models", "is_model",
           "get_model_cfg", "model_entrypoint", "rename_old_kwargs"]

logger = logging.getLogger("ppvit")

_MODELS = {}  # name -> builder function
_CFGS = {}  # name -> ModelCfg


@dataclass(frozen=True)
class ModelCfg(Mapping):
    """Metadata of one registered model name, with the field names of timm's ``pretrained_cfg``.

    Read as attributes (``cfg.input_size``) or as a mapping (``cfg["input_size"]``, ``dict(cfg)``,
    ``cfg.to_dict()``); the mapping holds the plain-data fields, not the two filter functions.

    input_size: (C, H, W) the model is built for by default. fixed_input_size: True when the model accepts
    only that size (position tables; build it with ``img_size=`` for another). mean/std: per-channel input
    normalisation of 0..1 RGB pixels. interpolation: resize filter ('bilinear' or 'bicubic'). crop_pct:
    centre-crop fraction at evaluation (1.0: resize only). num_classes: the default class count.
    classifier / first_conv: ``state_dict`` key prefixes of the final Linear and of the first conv.
    source: the source notebook (000-004, docs/reproduction.md) or official repository the architecture follows; paper: its URL.
    checkpoint_filter_fn: ``fn(state_dict) -> {Paddle key: np.ndarray}`` for official PyTorch weights
    (every family has the same signature), or None. pretrained_filter_fn: ``fn(state_dict, model) ->
    state_dict`` fitting Paddle weights to a model built for another input size (position tables resampled,
    ``ppvit.models.pos_embed``), applied by ``load_pretrained``; None where no weight depends on the size.
    architecture: the registered name.
    """

    input_size: tuple = (3, 224, 224)
    fixed_input_size: bool = False
    mean: tuple = IMAGENET_DEFAULT_MEAN
    std: tuple = IMAGENET_DEFAULT_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    num_classes: int = 1000
    classifier: str = "head"
    first_conv: str = "patch_embed.proj"
    source: str = ""
    paper: str = ""
    architecture: str = ""
    checkpoint_filter_fn: Optional[Callable] = field(default=None, compare=False, repr=False)
    pretrained_filter_fn: Optional[Callable] = field(default=None, compare=False, repr=False)

    def _keys(self):
        return [f.name for f in dataclasses.fields(self) if not f.name.endswith("_filter_fn")]

    def __getitem__(self, key):
        if key not in self._keys():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._keys())

    def __len__(self):
        return len(self._keys())

    def to_dict(self):
        """Plain dict of the data fields (tuples as lists are left as tuples), like timm's pretrained_cfg."""
        return {k: getattr(self, k) for k in self._keys()}

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


class PretrainedWeightsError(PpvitError):
    """``pretrained`` is not a weight file ppvit can read (ppvit downloads nothing)."""


def register_model(fn=None, *, cfg=None):
    """Register a model builder under its function name, with its ``ModelCfg``:

        @register_model(cfg=ModelCfg(input_size=(3, 32, 32), ...))
        def my_model(**kwargs): ...

    Raises ``TypeError`` without ``cfg`` and ``ValueError`` when the name is registered twice.
    """

    def wrap(builder):
        name = builder.__name__
        if not isinstance(cfg, ModelCfg):
            raise TypeError(f"register_model: {name} needs its metadata, register_model(cfg=ModelCfg(...))")
        if name in _MODELS:
            raise ValueError(f"model {name!r} is registered twice")
        _MODELS[name] = builder
        _CFGS[name] = cfg.replace(architecture=name)
        return builder

    return wrap(fn) if fn is not None else wrap


def list_models(filter="", pretrained=False, exclude_filters=""):
    """Registered model names, sorted, with timm's arguments.

    filter: a shell-style pattern such as ``'convit_*'`` (or a list of them: a name matching any is kept);
    ``''`` keeps every name. exclude_filters: pattern(s) of names to leave out. pretrained: True keeps only the
    names with downloadable pretrained weights: ppvit ships none and downloads nothing, so that list is empty
    (and a warning says so; convert official PyTorch weights with tools/convert_weights.py and pass the file
    as ``pretrained=``).
    """
    names = sorted(_MODELS)
    filters = [filter] if isinstance(filter, str) else list(filter or [])
    filters = [f for f in filters if f]
    if filters:
        names = [n for n in names if any(fnmatch.fnmatch(n, f) for f in filters)]
    excludes = [exclude_filters] if isinstance(exclude_filters, str) else list(exclude_filters or [])
    excludes = [f for f in excludes if f]
    if excludes:
        names = [n for n in names if not any(fnmatch.fnmatch(n, f) for f in excludes)]
    if pretrained:
        logger.warning("list_models(pretrained=True): ppvit ships no pretrained weights and downloads none, so "
                       "no model has them; convert official PyTorch weights with tools/convert_weights.py and "
                       "pass the file as create_model(name, pretrained=PATH)")
        return []
    return names


def is_model(name):
    return name in _MODELS


def unknown_model_message(name):
    close = difflib.get_close_matches(str(name), list(_MODELS), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return f"unknown model {name!r}.{hint} Registered models: {', '.join(list_models())}"


def get_model_cfg(name):
    """The ``ModelCfg`` of registered model ``name``. Raises ``ValueError`` (naming close matches) for an
    unknown name."""
    if name not in _CFGS:
        raise ValueError(unknown_model_message(name))
    return _CFGS[name]


def model_entrypoint(name):
    """The registered builder function of ``name`` (timm's name). Raises ``ValueError`` for an unknown name."""
    if name not in _MODELS:
        raise ValueError(unknown_model_message(name))
    return _MODELS[name]


# 003's CoAtNet code spells these arguments its own way -> timm's names
_OLD_SPELLINGS = {"image_size": "img_size", "in_channels": "in_chans"}


def rename_old_kwargs(kwargs):
    """``kwargs`` with ``image_size`` -> ``img_size`` and ``in_channels`` -> ``in_chans``.

    Raises ``TypeError`` when both spellings of one argument are given.
    """
    out = dict(kwargs)
    for old, new in _OLD_SPELLINGS.items():
        if old in out:
            if new in out:
                raise TypeError(f"got both {old}= and {new}= (the same argument; use {new}=)")
            out[new] = out.pop(old)
    return out


def create_model(name, pretrained=None, num_classes=None, features_only=False, out_indices=None, **kwargs):
    """Build registered model ``name``; returns a ``paddle.nn.Layer`` mapping [B, C, H, W] float32 images
    (normalised as ``get_model_cfg(name)`` says) to [B, num_classes] logits.

    pretrained: path to a ``.pdparams`` or ``.safetensors`` file with Paddle keys. When its head was
        trained for another class count than ``num_classes``, the head stays freshly initialised (logged;
        with ``num_classes=0`` the checkpoint's head is left out); every other key must match, or loading
        fails with one line counting the missing/unexpected/mismatched keys. Weights saved for another
        input size (``img_size``) have their position tables resampled (ConViT, CoAtNet; logged).
    num_classes: None keeps the name's default (``get_model_cfg(name).num_classes``: 1000 for ImageNet
        variants, 10 for the CIFAR ones); 0 gives a model without classifier (``forward`` returns features).
    features_only: return a backbone (``ppvit.models.features.FeatureGetterNet``) whose forward gives a list
        of NCHW feature maps, described by its ``feature_info`` (``.channels()``, ``.reduction()``), as timm's.
    out_indices: the feature levels a ``features_only`` model returns: a list of indices into
        ``model.feature_info`` (negative ones count from the end) or an int n (the last n); None: every level
        of a hierarchical model, the last 3 blocks of an isotropic one (ConViT, ConvMixer).
    kwargs: the family's constructor arguments, timm's names: ``img_size``, ``in_chans``, ``drop_rate``,
        ``drop_path_rate``, ... (``image_size`` and ``in_channels`` are accepted for ``img_size`` and
        ``in_chans``).

    The model carries ``model.pretrained_cfg``: the name's ``ModelCfg`` as a dict, updated with the
    class count and input size it was built with; ``model.default_cfg`` is the same dict (timm's older name),
    and ``model.feature_info`` lists its feature levels (``{"num_chs", "reduction", "module"}`` dicts).

    Raises ``ValueError`` for an unknown name, ``PretrainedWeightsError`` (a ``ValueError``) when
    ``pretrained`` is not a path (e.g. ``True``: nothing is downloaded), ``ValueError`` for ``out_indices``
    the model does not have (or given without ``features_only``), ``TypeError`` for arguments the family does
    not take, ``ppvit.io.CheckpointError`` when the weights do not fit the model.
    """
    if out_indices is not None and not features_only:
        raise ValueError(f"out_indices={out_indices!r} is for a backbone: pass features_only=True with it")
    from .helpers import build_model_with_cfg  # the one builder of a model with its weights

    model = build_model_with_cfg(name, pretrained=pretrained, num_classes=num_classes, **kwargs)
    if features_only:
        from .features import FeatureGetterNet

        model = FeatureGetterNet(model, out_indices, name=name)
    return model
