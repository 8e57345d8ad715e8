"""Softmax over numpy logits, once (inference top-k, LIME probabilities, the prediction grids)."""
import numpy as np

__all__ = ["softmax"]


def softmax(logits, axis=-1):
    """Numerically stable softmax of an array of logits along ``axis`` (same shape, dtype float)."""
    logits = np.asarray(logits)
    z = logits - logits.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)
