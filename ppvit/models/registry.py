"""One registry, one entry point: ``register_model`` / ``create_model`` / ``list_models``."""
import difflib
import fnmatch

_MODELS = {}


def register_model(fn):
    """Register a model builder under its function name."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is registered twice")
    _MODELS[name] = fn
    return fn


def list_models(pattern=None):
    """Registered model names, sorted; ``pattern`` is a shell-style filter such as ``'convit_*'``."""
    names = sorted(_MODELS)
    if pattern:
        names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return names


def is_model(name):
    return name in _MODELS


def unknown_model_message(name):
    close = difflib.get_close_matches(str(name), list(_MODELS), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    return f"unknown model {name!r}.{hint} Registered models: {', '.join(list_models())}"


def create_model(name, pretrained=None, num_classes=None, **kwargs):
    """Build a registered model.

    pretrained: path to a ``.pdparams`` or ``.safetensors`` file with Paddle keys. When its head was
        trained for another class count than ``num_classes``, the head stays freshly initialised (logged);
        every other key must match, or loading fails listing the missing/unexpected/mismatched keys.
    num_classes: None keeps the variant's default (1000 for ImageNet variants, 10 for ``*_cifar``).
    """
    if name not in _MODELS:
        raise ValueError(unknown_model_message(name))
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = _MODELS[name](**kwargs)
    if pretrained:
        from .helpers import load_pretrained

        load_pretrained(model, pretrained)
    return model
