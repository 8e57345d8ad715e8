"""Losses of the notebooks."""
import paddle
import paddle.nn as nn
import paddle.nn.functional as F


class LabelSmoothingCrossEntropy(nn.Layer):
    """The notebooks' label-smoothing loss: ``(1 - s) * nll + s * mean(-log p)``, averaged over the batch.

    ``target`` is either class indices ([B] or [B, 1]) or soft targets [B, C] (MixUp/CutMix); for soft
    targets the same smoothing is applied to the mixed distribution, which reduces to the notebooks'
    formula when the target is one-hot.
    """

    def __init__(self, smoothing=0.1):
        super().__init__()
        self.smoothing = smoothing

    def forward(self, pred, target):
        log_probs = F.log_softmax(pred, axis=-1)
        num_classes = pred.shape[-1]
        if target.ndim == pred.ndim and target.shape[-1] == num_classes and target.dtype in (
                paddle.float16, paddle.bfloat16, paddle.float32, paddle.float64):
            soft = target.astype(log_probs.dtype)
        else:
            soft = F.one_hot(target.reshape([-1]).astype("int64"), num_classes).astype(log_probs.dtype)
        soft = (1.0 - self.smoothing) * soft + self.smoothing / num_classes
        return (-log_probs * soft).sum(axis=-1).mean()


class SoftTargetCrossEntropy(LabelSmoothingCrossEntropy):
    """Cross-entropy without smoothing; accepts hard or soft targets."""

    def __init__(self):
        super().__init__(smoothing=0.0)
