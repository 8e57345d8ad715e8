"""Evaluation: loss, top-1, top-5 and the confusion matrix, reduced across ranks."""
import numpy as np
import paddle

from .distributed import all_reduce_sum


@paddle.no_grad()
def evaluate(model, loader, loss_fn, num_classes, progress=None):
    """Mean loss and top-1/top-5 accuracy (fractions) over every sample of ``loader`` on every rank.

    ``model`` is a ``paddle.nn.Layer`` (put in eval mode for the pass) or any callable mapping an NCHW
    image tensor to a logits tensor, e.g. a Paddle Inference predictor (``ppvit.commands.evaluate``).
    Returns a dict with ``loss``, ``top1``, ``top5``, ``count`` and ``confusion`` ([true, predicted] counts).
    """
    is_layer = isinstance(model, paddle.nn.Layer)
    was_training = is_layer and model.training
    if is_layer:
        model.eval()
    k = min(5, num_classes)
    loss_sum = correct1 = correct5 = count = 0.0
    confusion = np.zeros((num_classes, num_classes), dtype=np.float64)
    for images, labels in loader:
        labels = labels.reshape([-1]).astype("int64")
        logits = model(images)
        n = labels.shape[0]
        loss_sum += float(loss_fn(logits, labels)) * n
        topk = paddle.topk(logits, k=k, axis=-1)[1].numpy()
        y = labels.numpy()
        correct1 += float((topk[:, 0] == y).sum())
        correct5 += float((topk == y[:, None]).any(axis=1).sum())
        count += n
        np.add.at(confusion, (y, topk[:, 0]), 1)
        if progress is not None:
            progress.update(1)
    if was_training:
        model.train()
    totals = all_reduce_sum(np.concatenate([[loss_sum, correct1, correct5, count], confusion.ravel()]))
    loss_sum, correct1, correct5, count = totals[:4]
    count = max(count, 1.0)
    return {"loss": loss_sum / count, "top1": correct1 / count, "top5": correct5 / count,
            "count": int(totals[3]), "confusion": totals[4:].reshape(num_classes, num_classes).astype(np.int64)}


def per_class_table(confusion, class_names):
    """Text table: class, samples, correct, accuracy."""
    confusion = np.asarray(confusion)
    width = max(8, *(len(c) for c in class_names))
    lines = [f"{'class':<{width}}  {'samples':>7}  {'correct':>7}  {'accuracy':>8}"]
    for i, name in enumerate(class_names):
        total, right = int(confusion[i].sum()), int(confusion[i, i])
        acc = f"{100.0 * right / total:7.2f}%" if total else "      --"
        lines.append(f"{name:<{width}}  {total:>7}  {right:>7}  {acc:>8}")
    total, right = int(confusion.sum()), int(np.trace(confusion))
    lines.append(f"{'all':<{width}}  {total:>7}  {right:>7}  {100.0 * right / max(total, 1):7.2f}%")
    return "\n".join(lines)
