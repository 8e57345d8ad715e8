"""Loading pretrained weights into a built model."""
import logging
import os
import warnings

import paddle

from ..io import CheckpointError, load_state

logger = logging.getLogger("ppvit")


def head_prefixes(model):
    """Key prefixes of the classifier, which may be re-initialised for another class count."""
    names = getattr(model, "head_names", ("head",))
    return tuple(n + "." for n in names)


def load_pretrained(model, path_or_state, strict=True, reset_head=True):
    """Load weights into ``model``.

    reset_head=True (fine-tuning): head weights whose shapes differ (another class count), or that a headless
    checkpoint lacks, are left freshly initialised and that is logged. reset_head=False (evaluation, export,
    explanation: no training follows): the head must fit like every other key.
    Any other missing, unexpected or mismatched key raises ``CheckpointError`` listing them.
    """
    if not isinstance(path_or_state, (str, os.PathLike, dict)):  # e.g. timm's pretrained=True
        raise CheckpointError(
            f"pretrained must be a path to a .pdparams or .safetensors file with Paddle keys, got {path_or_state!r}; "
            "ppvit downloads no weights (convert an official PyTorch checkpoint with tools/convert_weights.py, "
            "or pass pretrained=None for random initialisation)")
    state = load_state(path_or_state) if not isinstance(path_or_state, dict) else path_or_state
    source = path_or_state if not isinstance(path_or_state, dict) else "state dict"
    own = model.state_dict()
    heads = head_prefixes(model) if reset_head else ()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched, skipped_head = [], []
    for k, v in own.items():
        if k in state and tuple(state[k].shape) != tuple(v.shape):
            if k.startswith(heads):
                skipped_head.append(k)
            else:
                mismatched.append(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}")
    # a headless checkpoint (e.g. num_classes=0) may also leave the head out
    head_missing = [k for k in missing if k.startswith(heads)]
    missing = [k for k in missing if not k.startswith(heads)]
    if strict and (missing or unexpected or mismatched):
        parts = []
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
                parts.append(f"{title} keys: {shown}")
        head = [k for k in own if k.startswith(head_prefixes(model))]
        if not reset_head and any(k in missing or any(m.startswith(k + ":") for m in mismatched) for k in head):
            parts.append("the classifier does not fit: weights for another class count (or none) cannot be "
                         "evaluated, exported or explained; set Arch.num_classes (num_classes) to the weights' class "
                         "count (only training from Global.pretrained_model re-initialises a head)")
        raise CheckpointError(
            f"{source} does not match model {type(model).__name__}: " + "; ".join(parts)
        )
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

    for wrapper in ("state_dict", "model"):
        if isinstance(state_dict.get(wrapper), dict):
            state_dict = state_dict[wrapper]
            break
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
