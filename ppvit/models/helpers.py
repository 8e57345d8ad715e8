"""Loading pretrained weights into a built model."""
import logging
import warnings

import paddle

from ..io import (CheckpointError, StateDictDiff, compare_state_dict, load_state, state_dict_mismatch_message,
                  unwrap_state_dict, weights_mismatch_message)

logger = logging.getLogger("ppvit")


def head_prefixes(model):
    """Key prefixes of the classifier, which may be re-initialised for another class count: the
    ``classifier`` of the model's ``pretrained_cfg`` (set by ``create_model``), else ``head_names``."""
    cfg = getattr(model, "pretrained_cfg", None)
    names = (cfg["classifier"],) if cfg else getattr(model, "head_names", ("head",))
    return tuple(n + "." for n in names)


def load_pretrained(model, path_or_state, strict=True, reset_head=True, fix=None, context=" for these arguments"):
    """Load weights into ``model``.

    reset_head=True (fine-tuning): head weights whose shapes differ (another class count), or that a headless
    checkpoint lacks, are left freshly initialised and that is logged. reset_head=False (evaluation, export,
    explanation: no training follows): the head must fit like every other key; when only the head differs,
    the error lists it and says to set the class count.
    Any other missing, unexpected or mismatched key raises ``CheckpointError``: one short line with the
    counts, a few example keys and ``fix`` (default: check the model name and its size arguments);
    ``context`` follows "does not hold <model> weights" (the engine says " for this config").
    """
    state = load_state(path_or_state) if not isinstance(path_or_state, dict) else unwrap_state_dict(path_or_state)
    source = path_or_state if not isinstance(path_or_state, dict) else "state dict"
    own = model.state_dict()
    name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__
    head = head_prefixes(model)
    heads = head if reset_head else ()
    diff = compare_state_dict(own, state)
    # another class count: the head's shapes differ; a headless checkpoint (e.g. num_classes=0) lacks it
    skipped_head = [k for k, _, _ in diff.mismatched if k.startswith(heads)]
    head_missing = [k for k in diff.missing if k.startswith(heads)]
    diff = StateDictDiff([k for k in diff.missing if not k.startswith(heads)], diff.unexpected,
                         [m for m in diff.mismatched if not m[0].startswith(heads)])
    if strict and diff:
        differing = diff.missing + [m[0] for m in diff.mismatched]
        only_head = not diff.unexpected and all(k.startswith(head) for k in differing)
        if only_head:  # the same model for another class count (or headless): say which count to set
            raise CheckpointError(
                state_dict_mismatch_message(diff, source, name) + "; the classifier does not fit: weights for "
                "another class count (or none) cannot be evaluated, exported or explained; set Arch.num_classes "
                "(num_classes) to the weights' class count (only training from Global.pretrained_model "
                "re-initialises a head)")
        # weights of another model or size: hundreds of key names would hide that; counts and a few examples
        raise CheckpointError(weights_mismatch_message(
            diff, source, name, len(own), fix or "check the model name and its size arguments, or the weights file",
            context))
    to_load = {k: paddle.to_tensor(state[k], dtype=own[k].dtype) for k in own
               if k in state and k not in skipped_head and tuple(state[k].shape) == tuple(own[k].shape)}
    with warnings.catch_warnings():  # the skipped head is reported below, once
        warnings.filterwarnings("ignore", message="Skip loading for")
        model.set_state_dict(to_load)
    if skipped_head or head_missing:
        logger.info("loaded %s; classifier %s re-initialised (class count differs from the checkpoint)",
                    source, ", ".join(sorted(set(skipped_head + head_missing))))
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
