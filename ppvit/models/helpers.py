"""The one builder of a registered model with its weights (``build_model_with_cfg``, which ``create_model``,
the engine and the commands all go through) and the loading of pretrained weights into a built model."""
import logging
import os
import warnings

import paddle

from ..io import (CheckpointError, StateDictDiff, compare_state_dict, load_state, state_dict_mismatch_message,
                  unwrap_state_dict, weights_mismatch_message)
from .registry import PretrainedWeightsError, get_model_cfg, model_entrypoint, rename_old_kwargs

logger = logging.getLogger("ppvit")


def build_model_with_cfg(name, pretrained=None, num_classes=None, *, reset_head=True, fix=None,
                         context=" for these arguments", **kwargs):
    """Registered model ``name`` built with ``kwargs``, carrying its ``pretrained_cfg``, with ``pretrained``'s
    weights (timm's ``build_model_with_cfg``): ``create_model`` is this with the defaults; the engine and the
    commands pass ``reset_head`` (False where no training follows: the head must fit) and the wording of a
    refusal (``fix``, ``context``: see ``load_pretrained``).

    Weights saved for another input size are fitted by the family's ``pretrained_filter_fn`` (ConViT's
    ``pos_embed`` and CoAtNet's relative-position tables resampled, logged) before the strict key check, when
    ``reset_head`` (fine-tuning); with ``reset_head=False`` (eval, export, explain) they must fit as they are.

    Raises ``ValueError`` for an unknown name, ``PretrainedWeightsError`` when ``pretrained`` is not a path,
    ``TypeError`` for arguments the family does not take, ``CheckpointError`` when the weights do not fit.
    """
    builder, cfg = model_entrypoint(name), get_model_cfg(name)
    if pretrained is False:
        pretrained = None
    if pretrained is not None:
        _check_pretrained(pretrained)
    kwargs = rename_old_kwargs(kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    model = builder(**kwargs)
    model.pretrained_cfg = model.default_cfg = _built_cfg(cfg, model)  # default_cfg: timm's older name
    if pretrained is not None:
        # weights fitted to another input size are for fine-tuning (which also re-initialises a differing head);
        # where no training follows, the weights must be for this very model, or the numbers would silently differ
        load_pretrained(model, pretrained, reset_head=reset_head, fix=fix, context=context,
                        filter_fn=cfg.pretrained_filter_fn if reset_head else None)
    return model


def _check_pretrained(pretrained):
    if pretrained is True or not isinstance(pretrained, (str, os.PathLike)):
        raise PretrainedWeightsError(
            f"pretrained must be a path to a .pdparams or .safetensors file with Paddle keys, got "
            f"{pretrained!r}; ppvit downloads no weights (convert an official PyTorch checkpoint with "
            "tools/convert_weights.py, or pass pretrained=None for random initialisation)")


def _built_cfg(cfg, model):
    """The name's cfg as a dict, with what this build changed: class count, input size, classifier."""
    out = cfg.to_dict()
    out["num_classes"] = getattr(model, "num_classes", cfg.num_classes)
    size = getattr(model, "img_size", None)
    if size is not None:
        out["input_size"] = (getattr(model, "in_chans", cfg.input_size[0]),) + tuple(size)
    heads = getattr(model, "head_names", None)
    if heads:
        out["classifier"] = heads[0]
    return out


def head_prefixes(model):
    """Key prefixes of the classifier, which may be re-initialised for another class count: the
    ``classifier`` of the model's ``pretrained_cfg`` (set by ``create_model``), else ``head_names``."""
    cfg = getattr(model, "pretrained_cfg", None)
    names = (cfg["classifier"],) if cfg else getattr(model, "head_names", ("head",))
    return tuple(n + "." for n in names)


def model_name(model):
    """The name errors use for ``model``: its registered name (``pretrained_cfg['architecture']``, set by
    ``create_model``), else its class name."""
    return (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__


def _class_count(state, head):
    """The class count of the classifier under ``head`` (prefixes) in ``state`` ({name: array}): the output
    size of its 2-D weight (Paddle's Linear stores [in, out]); 0 when ``state`` has no head key, None when
    it cannot tell."""
    weights = [v for k, v in state.items() if k.startswith(head) and k.endswith("weight") and len(v.shape) == 2]
    if not any(k.startswith(head) for k in state):
        return 0
    return int(weights[0].shape[-1]) if len(weights) == 1 else None


def _mismatch_message(diff, own, state, source, name, head, fix, context):
    """The one-line refusal for a strict load. When the classifier's keys are the only model keys that differ
    (the same model saved for another class count, or with/without a head), the class-count advice; keys the
    model has no place for at all (a counter such as ``ema.n_updates``: its last name part is none of the
    model's) are then named in a few words rather than calling the file another model's. Anything else is
    another model (or size): ``weights_mismatch_message``'s counts and examples, then ``fix``."""
    leaves = {k.rsplit(".", 1)[-1] for k in own}
    foreign = [k for k in diff.unexpected if not k.startswith(head) and k.rsplit(".", 1)[-1] not in leaves]
    head_diff = StateDictDiff([k for k in diff.missing if k.startswith(head)],
                              [k for k in diff.unexpected if k.startswith(head)],
                              [m for m in diff.mismatched if m[0].startswith(head)])
    differing = len(head_diff.missing) + len(head_diff.unexpected) + len(head_diff.mismatched) + len(foreign)
    total = len(diff.missing) + len(diff.unexpected) + len(diff.mismatched)
    if differing < total or not (head_diff or foreign):  # other model keys differ: another model or size
        return weights_mismatch_message(diff, source, name, len(own), fix, context)
    extra = (f"{len(foreign)} key{'s' if len(foreign) > 1 else ''} the model does not have: "
             f"{', '.join(foreign[:3])}{', ...' if len(foreign) > 3 else ''}")
    if not head_diff:  # every model weight is there, plus a counter or the like
        return (f"{source} holds the {name} weights{context} and {extra}; "
                f"remove {'it' if len(foreign) == 1 else 'them'} from the file")
    count = _class_count(state, head)
    count = f", {count}{' (no classifier)' if count == 0 else ''}" if count is not None else ""
    return (state_dict_mismatch_message(head_diff, source, name) + (f"; and {extra}" if foreign else "")
            + "; the classifier does not fit: weights for another class count (or none) cannot be evaluated, "
            "exported or explained (only training from Global.pretrained_model re-initialises a head); set "
            f"Arch.num_classes (num_classes) to the weights' class count{count}"
            + (f", and remove {foreign[0] if len(foreign) == 1 else 'those keys'} from the file" if foreign else ""))


def _family_filter(model):
    """The ``pretrained_filter_fn`` of the registered name ``model`` was built as (None for other models)."""
    name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    try:
        return get_model_cfg(name).pretrained_filter_fn if name else None
    except ValueError:
        return None


def load_pretrained(model, path_or_state, strict=True, reset_head=True, fix=None, context=" for these arguments",
                    filter_fn=None):
    """Load weights into ``model``.

    filter_fn: ``fn(state, model) -> state`` fitting the weights to ``model`` (default, when fine-tuning
    (``reset_head``): the family's ``pretrained_filter_fn``, found through ``model.pretrained_cfg``): position
    tables saved for another input size are resampled to ``model``'s, and each one resampled is logged with its
    old and new shape. Where no training follows, weights for another size are refused like any other misfit.

    reset_head=True (fine-tuning, ``create_model``): head weights whose shapes differ (another class count),
    or that a headless checkpoint lacks, are left freshly initialised, and a checkpoint's head that a
    headless model (num_classes=0) has no place for is left out; both are logged. reset_head=False
    (evaluation, export, explanation: no training follows): the head must fit like every other key; when
    only the head differs, the error lists it and says to set the class count.
    Any other missing, unexpected or mismatched key raises ``CheckpointError``: one short line with the
    counts, a few example keys and ``fix`` (default: check the model name and its size arguments);
    ``context`` follows "does not hold <model> weights" (the engine says " for this config").
    """
    state = load_state(path_or_state) if not isinstance(path_or_state, dict) else unwrap_state_dict(path_or_state)
    source = path_or_state if not isinstance(path_or_state, dict) else "state dict"
    filter_fn = filter_fn or (_family_filter(model) if reset_head else None)
    if filter_fn is not None:
        shapes = {k: tuple(v.shape) for k, v in state.items()}
        state = filter_fn(state, model)
        resampled = {}  # (old shape, new shape) -> keys
        for k, v in state.items():
            if k in shapes and shapes[k] != tuple(v.shape):
                resampled.setdefault((shapes[k], tuple(v.shape)), []).append(k)
        if resampled:
            logger.info("%s: position tables resampled for %s's input size: %s", source, model_name(model), "; ".join(
                f"{keys[0] if len(keys) == 1 else f'{len(keys)} tables ({keys[0]}, ...)'} {list(old)} -> {list(new)}"
                for (old, new), keys in resampled.items()))
    own = model.state_dict()
    head = head_prefixes(model)
    heads = head if reset_head else ()
    diff = compare_state_dict(own, state)
    # another class count: the head's shapes differ; a headless checkpoint (e.g. num_classes=0) lacks it, or
    # a headless model has no place for the checkpoint's
    skipped_head = [k for k, _, _ in diff.mismatched if k.startswith(heads)]
    head_missing = [k for k in diff.missing if k.startswith(heads)]
    # only a model without any classifier leaves the checkpoint's out: where the model has one, an unexpected
    # key under its prefix is a layout the model does not know, and stays an error
    headless = not any(k.startswith(heads) for k in own) if heads else False
    head_unused = [k for k in diff.unexpected if k.startswith(heads)] if headless else []
    diff = StateDictDiff([k for k in diff.missing if not k.startswith(heads)],
                         [k for k in diff.unexpected if k not in head_unused],
                         [m for m in diff.mismatched if not m[0].startswith(heads)])
    if strict and diff:
        raise CheckpointError(_mismatch_message(
            diff, own, state, source, model_name(model), head,
            fix or "check the model name and its size arguments, or the weights file", context))
    to_load = {k: paddle.to_tensor(state[k], dtype=own[k].dtype) for k in own
               if k in state and k not in skipped_head and tuple(state[k].shape) == tuple(own[k].shape)}
    with warnings.catch_warnings():  # the skipped head is reported below, once
        warnings.filterwarnings("ignore", message="Skip loading for")
        model.set_state_dict(to_load)
    if skipped_head or head_missing:
        logger.info("loaded %s; classifier %s re-initialised (class count differs from the checkpoint)",
                    source, ", ".join(sorted(set(skipped_head + head_missing))))
    elif head_unused:
        logger.info("loaded %s; its classifier %s left out (the model has none)", source, ", ".join(head_unused))
    else:
        logger.info("loaded %s (%d tensors)", source, len(to_load))
    return model


def apply_key_map(state_dict, key_map):
    """Convert a PyTorch ``state_dict`` ({name: array-like}) to Paddle names and layouts with a key map.

    ``key_map`` is data, beside each model (timm's ``checkpoint_filter_fn`` idea): ``drop`` regexes of
    source keys to leave out, ``rename`` (regex, replacement) pairs applied in order (a replacement may be a
    function of the match, for index arithmetic), and ``transpose`` regexes of renamed keys whose 2-D
    values are ``nn.Linear`` weights (PyTorch stores [out, in], Paddle [in, out]). A whole training
    checkpoint (weights under ``state_dict`` or ``model``) is accepted too. Returns {name: np.ndarray}.
    """
    import re

    import numpy as np

    state_dict = unwrap_state_dict(state_dict)
    out = {}
    for key, value in state_dict.items():
        if any(re.search(p, key) for p in key_map.get("drop", ())):
            continue
        new = key
        for pattern, repl in key_map.get("rename", ()):
            new = re.sub(pattern, repl, new)
        value = np.asarray(value)
        if value.ndim == 2 and any(re.search(p, new) for p in key_map.get("transpose", ())):
            value = value.T
        if new in out:
            raise CheckpointError(f"key map sends two source keys to {new!r} (the second is {key!r})")
        out[new] = np.ascontiguousarray(value)
    return out
