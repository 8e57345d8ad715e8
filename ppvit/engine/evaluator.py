"""Evaluation: loss, top-1, top-5, the confusion matrix and the confidence histogram, reduced across ranks; per-class
precision/recall/F1, the expected calibration error and temperature scaling (numpy, from those)."""
import math

import numpy as np
import paddle

from .distributed import all_reduce_sum, rank, world_size

ECE_BINS = 15  # Guo et al. 2017's 15 equal-width confidence bins
# the temperatures fit_temperature searches (a wider range means a degenerate fit: said, not hidden)
TEMPERATURE_RANGE = (0.01, 100.0)


def _softmax64(logits):
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def calibration_bins(probs, labels, n_bins=ECE_BINS):
    """Confidence histogram of predictions: ``[3, n_bins]`` float64 rows (count, sum of confidences, number
    correct) per bin. The confidence is the top probability of each row of ``probs`` ([N, C]); bin b holds
    confidences in (b / n_bins, (b + 1) / n_bins] (Guo et al. 2017), a confidence of 0 falls in the first."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    conf = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == labels).astype(np.float64)
    # a non-finite confidence (NaN logits) lands in the first bin and makes the ECE NaN (null in eval.json)
    b = np.clip(np.ceil(np.nan_to_num(conf, nan=0.0) * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    out = np.zeros((3, n_bins))
    np.add.at(out[0], b, 1.0)
    np.add.at(out[1], b, conf)
    np.add.at(out[2], b, correct)
    return out


def expected_calibration_error(bins):
    """ECE of a ``calibration_bins`` histogram: sum over bins of (share of samples) x |accuracy - mean
    confidence| (a fraction in [0, 1]; Guo et al. 2017, eq. 3)."""
    count, conf, correct = np.asarray(bins, dtype=np.float64)
    total = count.sum()
    if total == 0:
        return float("nan")
    return float(np.abs(correct - conf).sum() / total)  # n_b/N * |acc_b - conf_b| = |correct_b - conf_sum_b| / N


def reliability(bins):
    """Per bin: ``{"count", "accuracy", "confidence"}`` lists (None for an empty bin) and the bin edges."""
    count, conf, correct = np.asarray(bins, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc, mean_conf = correct / count, conf / count
    n = len(count)
    return {"edges": [i / n for i in range(n + 1)], "count": [int(c) for c in count],
            "accuracy": [None if c == 0 else float(a) for c, a in zip(count, acc)],
            "confidence": [None if c == 0 else float(m) for c, m in zip(count, mean_conf)]}


def per_class_metrics(confusion):
    """Precision, recall, F1 and support per class of a confusion matrix ([true, predicted] counts), as
    ``sklearn.metrics.precision_recall_fscore_support(..., zero_division=0)``: a class never predicted has
    precision 0, one without samples recall 0. Returns ``{"precision", "recall", "f1", "support"}`` lists and
    their unweighted means over the classes (``macro_precision``, ``macro_recall``, ``macro_f1``)."""
    c = np.asarray(confusion, dtype=np.float64)
    tp = np.diag(c)
    predicted, support = c.sum(axis=0), c.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision.tolist(), "recall": recall.tolist(), "f1": f1.tolist(),
            "support": support.astype(np.int64).tolist(), "macro_precision": float(precision.mean()),
            "macro_recall": float(recall.mean()), "macro_f1": float(f1.mean())}


def nll(logits, labels, temperature=1.0):
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)`` (float64)."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return float((lse - z[np.arange(len(z)), np.asarray(labels).reshape(-1)]).mean())


def fit_temperature(logits, labels, bounds=TEMPERATURE_RANGE, tol=1e-10):
    """Temperature scaling (Guo et al. 2017): the scalar T > 0 minimising the mean NLL of ``labels`` under
    ``softmax(logits / T)``. ``logits``: [N, C]; ``labels``: [N] class ids.

    The NLL is convex in beta = 1 / T (a log-sum-exp of functions linear in beta, minus one), so its derivative
    in beta, mean(E_softmax[z] - z_label), is increasing: bisection on its sign (in log beta) finds the
    minimum to ``tol``, without step sizes to tune. Returns ``(T, at_bound)``: at_bound is True when the
    minimum lies at an end of ``bounds`` (the logits' scale fits no temperature inside: e.g. every sample
    right with a wide margin, where the NLL keeps falling as T -> 0). Dividing by T > 0 keeps every argmax:
    top-1 never changes. Raises ``ValueError`` for mismatched shapes or non-finite logits.
    """
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels).reshape(-1)
    if z.ndim != 2 or len(z) != len(y) or len(z) == 0:
        raise ValueError(f"fit_temperature needs [N, C] logits and N labels (N > 0), got {z.shape} and {y.shape}")
    if not np.isfinite(z).all():
        raise ValueError("fit_temperature needs finite logits: the model gives NaN or inf on this split")
    z_label = z[np.arange(len(z)), y]

    def slope(beta):  # d NLL / d beta
        p = _softmax64(z * beta)
        return float(((p * z).sum(axis=1) - z_label).mean())

    lo, hi = math.log(1.0 / bounds[1]), math.log(1.0 / bounds[0])  # log beta
    if slope(math.exp(hi)) <= 0:
        return bounds[0], True
    if slope(math.exp(lo)) >= 0:
        return bounds[1], True
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        if slope(math.exp(mid)) > 0:
            hi = mid
        else:
            lo = mid
    return float(1.0 / math.exp(0.5 * (lo + hi))), False


def _gather_rows(rows):
    """Every rank's rows ([n_r, K] float64), concatenated in rank order, on every rank."""
    rows = np.asarray(rows, dtype=np.float64)
    if world_size() == 1:
        return rows
    counts = np.zeros(world_size())
    counts[rank()] = len(rows)
    counts = all_reduce_sum(counts).astype(np.int64)
    out = np.zeros((int(counts.sum()), rows.shape[1]))
    start = int(counts[:rank()].sum())
    out[start:start + len(rows)] = rows
    return all_reduce_sum(out)


@paddle.no_grad()
def evaluate(model, loader, loss_fn, num_classes, progress=None, keep_logits=False):
    """Mean loss and top-1/top-5 accuracy (fractions) over every sample of ``loader`` on every rank.

    ``model`` is a ``paddle.nn.Layer`` (put in eval mode for the pass) or any callable mapping an NCHW
    image tensor to a logits tensor, e.g. a Paddle Inference predictor (``ppvit.commands.evaluate``).
    Returns a dict with ``loss``, ``top1``, ``top5``, ``count``, ``confusion`` ([true, predicted] counts) and
    ``calibration_bins`` (``calibration_bins`` of the softmax probabilities, summed over batches and ranks);
    with ``keep_logits`` also ``logits`` ([count, num_classes] float64) and ``labels`` ([count] int64) of every
    rank, for ``fit_temperature``.
    """
    is_layer = isinstance(model, paddle.nn.Layer)
    was_training = is_layer and model.training
    if is_layer:
        model.eval()
    k = min(5, num_classes)
    loss_sum = correct1 = correct5 = count = 0.0
    confusion = np.zeros((num_classes, num_classes), dtype=np.float64)
    bins = np.zeros((3, ECE_BINS))
    kept = []
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
        z = logits.numpy()
        bins += calibration_bins(_softmax64(z), y)
        if keep_logits:
            kept.append(np.concatenate([z.astype(np.float64), y[:, None].astype(np.float64)], axis=1))
        if progress is not None:
            progress.update(1)
    if was_training:
        model.train()
    totals = all_reduce_sum(np.concatenate([[loss_sum, correct1, correct5, count], confusion.ravel(), bins.ravel()]))
    loss_sum, correct1, correct5, count = totals[:4]
    count = max(count, 1.0)
    m = num_classes * num_classes
    res = {"loss": loss_sum / count, "top1": correct1 / count, "top5": correct5 / count,
           "count": int(totals[3]), "confusion": totals[4:4 + m].reshape(num_classes, num_classes).astype(np.int64),
           "calibration_bins": totals[4 + m:].reshape(3, ECE_BINS)}
    if keep_logits:
        rows = _gather_rows(np.concatenate(kept) if kept else np.zeros((0, num_classes + 1)))
        res["logits"], res["labels"] = rows[:, :-1], rows[:, -1].astype(np.int64)
    return res


def per_class_table(confusion, class_names):
    """Text table: class, samples, correct, accuracy (= recall), precision, recall, F1 (as
    ``per_class_metrics``); the last line, ``all``, has the overall accuracy and the macro averages."""
    confusion = np.asarray(confusion)
    m = per_class_metrics(confusion)
    width = max(8, *(len(c) for c in class_names))

    def pct(v):
        return f"{100.0 * v:7.2f}%"

    lines = [f"{'class':<{width}}  {'samples':>7}  {'correct':>7}  {'accuracy':>8}  {'precision':>9}  "
             f"{'recall':>8}  {'F1':>8}"]
    for i, name in enumerate(class_names):
        total, right = int(confusion[i].sum()), int(confusion[i, i])
        acc = pct(right / total) if total else "      --"
        lines.append(f"{name:<{width}}  {total:>7}  {right:>7}  {acc:>8}  {pct(m['precision'][i]):>9}  "
                     f"{pct(m['recall'][i]):>8}  {pct(m['f1'][i]):>8}")
    total, right = int(confusion.sum()), int(np.trace(confusion))
    lines.append(f"{'all':<{width}}  {total:>7}  {right:>7}  {pct(right / max(total, 1)):>8}  "
                 f"{pct(m['macro_precision']):>9}  {pct(m['macro_recall']):>8}  {pct(m['macro_f1']):>8}")
    return "\n".join(lines)
