"""The notebooks' figures: learning curves (004's ``plot_learning_curve``) and a confusion matrix, drawn on
Agg ``Figure`` objects (``ppvit.utils.figures``): the global matplotlib backend is never touched."""
import numpy as np

from ..utils.figures import agg_figure, save_png


def plot_learning_curve(record, title="loss", ylabel="CE Loss", xlabel="Training steps", path=None, percent=False):
    """Train (red) and val (cyan) curves of ``record[split][title]`` over ``record[split]['iter']``.

    ``record`` has the notebooks' shape ``{'train': {title: [...], 'iter': [...]}, 'val': {...}}``; the
    y range is the notebook's (0.9 * min to 1.1 * max). ``percent``: the values are fractions, drawn in %
    (as the logs print accuracy; the axis stops at 100). Saves a PNG when ``path`` is given; returns the figure.
    """
    scale = 100.0 if percent else 1.0
    train = [scale * float(v) for v in record["train"][title]]
    val = [scale * float(v) for v in record["val"][title]]
    values = train + val
    fig = agg_figure((10, 6))
    ax = fig.add_subplot()
    ax.plot(list(map(int, record["train"]["iter"])), train, c="tab:red", label="train")
    ax.plot(list(map(int, record["val"]["iter"])), val, c="tab:cyan", label="val",
            marker="o" if len(val) < 3 else None)
    if values and max(values) > min(values) * 0.9:
        top = max(values) * 1.1
        ax.set_ylim(min(values) * 0.9, min(top, 100.5) if percent else top)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and epochs are whole numbers
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(f"Learning curve of {title}")
    ax.legend()
    if path:
        save_png(fig, path, bbox_inches="tight")
    return fig


def plot_confusion_matrix(matrix, class_names, path=None, title="Confusion matrix (rows: true, columns: "
                          "predicted)"):
    """Row-normalised confusion matrix with the counts written in each cell."""
    matrix = np.asarray(matrix)
    n = len(class_names)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = max(6, 0.6 * n + 2)
    fig = agg_figure((size, size))
    ax = fig.add_subplot()
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if rates[i, j] > 0.5 else "black")
    bar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    bar.set_label("share of the true class's images (each row sums to 1); cell numbers: image counts")
    if path:
        save_png(fig, path, bbox_inches="tight")
    return fig


def plot_reliability_diagram(curves, path=None, title="Reliability diagram"):
    """Accuracy against confidence per bin (Guo et al. 2017's reliability diagram), one bar series per entry of
    ``curves`` ({label: ``evaluator.reliability`` dict}, e.g. raw and temperature-scaled), with the diagonal of
    perfect calibration and each bin's sample count below. Labels should carry their ECE."""
    fig = agg_figure((7, 7.5))
    ax, counts = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], ls="--", c="gray", label="perfect calibration")
    colors = ["tab:blue", "tab:orange", "tab:green"]
    n_series = max(len(curves), 1)
    for k, (label, rel) in enumerate(curves.items()):
        edges = np.asarray(rel["edges"])
        width = (edges[1] - edges[0]) / n_series
        left = edges[:-1] + k * width
        acc = [np.nan if a is None else a for a in rel["accuracy"]]
        ax.bar(left, acc, width=width, align="edge", color=colors[k % 3], alpha=0.75, edgecolor="black",
               lw=0.5, label=label)
        counts.bar(left, rel["count"], width=width, align="edge", color=colors[k % 3], alpha=0.75)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy in the bin")
    ax.set_title(title)
    ax.legend(loc="upper left")
    counts.set_xlabel("confidence (top softmax probability)")
    counts.set_ylabel("images")
    if path:
        save_png(fig, path, bbox_inches="tight")
    return fig
