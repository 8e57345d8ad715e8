"""Reading and writing weight files: ``.pdparams`` (pickle; trusted files only) and ``.safetensors``
(no pickle: safe for downloads); unwrapping the ``{'state_dict': ...}`` / ``{'model': ...}`` containers of
training checkpoints; and the one comparison of a state dict with a model's (keys and shapes), whose short
message every loader (``create_model(pretrained=...)``, ``Global.pretrained_model``, resume, the converter)
uses. Every write is atomic (``ppvit.io.atomic``): a kill at any moment leaves the previous file intact."""
import os
from typing import List, NamedTuple, Tuple

import numpy as np
import paddle

from ..errors import PpvitError
from .atomic import atomic_path

__all__ = ["CheckpointError", "StateDictDiff", "check_state_dict", "compare_state_dict", "load_state",
           "save_state", "state_dict_mismatch_message", "unwrap_state_dict", "weights_mismatch_message",
           "STATE_DICT_WRAPPERS"]

# where training scripts (DeiT-style main.py, timm's train.py, Lightning, ...) nest the weights
STATE_DICT_WRAPPERS = ("state_dict", "model", "module", "net")


class CheckpointError(PpvitError):
    """A weight file that cannot be used: missing, unreadable, or not matching the model."""


def _to_numpy(v):
    if isinstance(v, paddle.Tensor):
        return v.numpy()
    return np.asarray(v)


def save_state(state, path):
    """Save a flat ``{name: tensor}`` dict (or a nested pdparams/pdopt object) atomically."""
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        if path.endswith(".safetensors"):
            from safetensors.numpy import save_file

            save_file({k: np.ascontiguousarray(_to_numpy(v)) for k, v in state.items()}, tmp)
        else:
            paddle.save(state, tmp)


def load_state(path):
    """Load a weight file into a ``{name: numpy array}`` dict, with one clear error on any failure.

    A training checkpoint holding its weights under ``state_dict``/``model``/... is unwrapped."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"weight file not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            state = load_file(path)
        else:
            state = paddle.load(path, return_numpy=True)
    except Exception as e:  # truncated or foreign files raise many different errors
        raise CheckpointError(
            f"cannot read weight file {path} ({type(e).__name__}: {e}); it may be truncated or not a "
            "Paddle/safetensors state dict"
        ) from None
    state = unwrap_state_dict(state)
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise CheckpointError(f"{path} does not hold a flat state dict of tensors")
    return {k: np.asarray(v) for k, v in state.items()}


def unwrap_state_dict(obj):
    """The ``{name: tensor}`` dict inside a training checkpoint: follows ``state_dict``, ``model``,
    ``module`` or ``net`` (up to three levels) while the current dict holds no tensor itself. Anything
    else is returned unchanged."""
    for _ in range(3):
        if not isinstance(obj, dict) or any(hasattr(v, "shape") for v in obj.values()):
            break
        inner = next((obj[w] for w in STATE_DICT_WRAPPERS if isinstance(obj.get(w), dict)), None)
        if inner is None:
            break
        obj = inner
    return obj


class StateDictDiff(NamedTuple):
    """Keys of a model's state dict absent from a checkpoint (``missing``), keys of the checkpoint the model
    lacks (``unexpected``), and ``(key, checkpoint shape, model shape)`` where both have a key but shapes
    differ (``mismatched``). Falsy when the two match."""

    missing: List[str]
    unexpected: List[str]
    mismatched: List[Tuple[str, tuple, tuple]]

    def __bool__(self):
        return bool(self.missing or self.unexpected or self.mismatched)


def compare_state_dict(model_state, state):
    """Compare ``state`` (a checkpoint's ``{name: array}``) with ``model_state`` (``model.state_dict()``)
    by keys and shapes; returns a ``StateDictDiff``."""
    missing = [k for k in model_state if k not in state]
    unexpected = [k for k in state if k not in model_state]
    mismatched = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in model_state.items()
                  if k in state and tuple(state[k].shape) != tuple(v.shape)]
    return StateDictDiff(missing, unexpected, mismatched)


def state_dict_mismatch_message(diff, source, model_name, hint="", limit=20):
    """One line listing every difference: ``<source> does not match model <name> <hint>: missing keys: ...;
    unexpected keys: ...; shape mismatch: key: checkpoint (..) vs model (..), ...`` (at most ``limit`` keys per
    list). For a few keys (a classifier for another class count); ``weights_mismatch_message`` summarises."""

    def shown(items):
        return ", ".join(items[:limit]) + (f", ... ({len(items)} in all)" if len(items) > limit else "")

    parts = []
    if diff.missing:
        parts.append(f"missing keys: {shown(diff.missing)}")
    if diff.unexpected:
        parts.append(f"unexpected keys: {shown(diff.unexpected)}")
    if diff.mismatched:
        parts.append("shape mismatch: " + shown([f"{k}: checkpoint {c} vs model {m}"
                                                 for k, c, m in diff.mismatched]))
    return f"{source} does not match model {model_name}{' ' + hint if hint else ''}: " + "; ".join(parts)


def weights_mismatch_message(diff, source, model_name, n_model_keys, fix, context="", examples=3):
    """One short line for weights of another model (or size): counts and at most ``examples`` example keys,
    e.g. ``w.pdparams does not hold convmixer_256_8 weights for this config: 56 of 56 model keys missing, 267
    unexpected (e.g. missing 0.weight, 0.bias; unexpected layers.0.norm.weight); <fix>``. A wall of a
    few hundred key names would hide the point: the file is for another model. ``n_model_keys``: the
    model's state-dict size; ``context``: appended to the opening (``" for this config"``)."""
    counts = []
    if diff.missing:
        counts.append(f"{len(diff.missing)} of {n_model_keys} model keys missing")
    if diff.mismatched:
        counts.append(f"{len(diff.mismatched)}{'' if counts else f' of {n_model_keys} model keys'} "
                      "of another shape")
    if diff.unexpected:
        counts.append(f"{len(diff.unexpected)} unexpected" + ("" if counts else " key" if len(diff.unexpected) == 1
                                                              else " keys"))
    # round robin over the three lists, so that each kind of difference gets an example
    lists = {"missing": list(diff.missing), "unexpected": list(diff.unexpected),
             "": [f"{k}: checkpoint {c} vs model {m}" for k, c, m in diff.mismatched]}
    picked = {label: [] for label in lists}
    for i in range(examples):
        for label, items in lists.items():
            if i < len(items) and sum(map(len, picked.values())) < examples:
                picked[label].append(items[i])
    shown = "; ".join((label + " " if label else "") + ", ".join(items) for label, items in picked.items() if items)
    total = len(diff.missing) + len(diff.unexpected) + len(diff.mismatched)
    return (f"{source} does not hold {model_name} weights{context}: {', '.join(counts)} "
            f"({'e.g. ' if total > examples else ''}{shown}); {fix}")


def check_state_dict(model_state, state, source, model_name, fix, context="", error=CheckpointError):
    """Raise ``error`` with ``weights_mismatch_message`` unless ``state`` matches ``model_state`` key for
    key and shape for shape."""
    diff = compare_state_dict(model_state, state)
    if diff:
        raise error(weights_mismatch_message(diff, source, model_name, len(model_state), fix, context))
