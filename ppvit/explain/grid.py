"""The prediction grid of notebook 004's ``show_images``: images titled "pred: <predicted class>" over
"true: <true class>" (the notebook's "pt"/"gt"), and a line above the grid saying so.

Wrong predictions are marked in red (title and frame), right ones in green; without true labels (image
files) the titles are black and show the predicted class and its probability. ``captions`` (e.g. file
names) are written under the images.
"""
import numpy as np

__all__ = ["grid_legend", "prediction_grid", "save_prediction_grid"]

RIGHT, WRONG, UNKNOWN = "tab:green", "tab:red", "black"


def _label(names, i):
    i = int(i)
    return names[i] if names is not None and 0 <= i < len(names) else str(i)


def _as_display(image):
    """HWC uint8 (0..255) or float (0..1) -> something ``imshow`` shows without clipping warnings."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        raise ValueError(f"grid images must be HWC, got shape {image.shape} (CHW? use ppvit.data.denormalize)")
    if np.issubdtype(image.dtype, np.floating):
        image = np.clip(image, 0.0, 1.0)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return image


def _short(text, width=22):
    text = str(text)
    return text if len(text) <= width else text[:width // 2 - 1] + "…" + text[-(width - width // 2):]


def grid_legend(with_true, with_probs):
    """The line above a grid that explains its titles."""
    pred = "pred: predicted class" + (" (its probability)" if with_probs else "")
    return pred if not with_true else pred + ", true: ground truth; green = right, red (framed) = wrong"


def prediction_grid(images, pred, true=None, class_names=None, probs=None, ncols=9, scale=1.5, title=None,
                    captions=None):
    """A matplotlib ``Figure`` (Agg canvas, no pyplot state) with one panel per image.

    Args:
        images: sequence of HWC images, uint8 0..255 or float 0..1 (``ppvit.data.denormalize`` output).
        pred: predicted class per image.
        true: true class per image, or None (then nothing is marked wrong).
        class_names: names indexed by class; missing ones show the index.
        probs: probability of the predicted class per image, shown when given.
        ncols: panels per row (the notebook used one row of 18).
        scale: inches per panel, as the notebook's ``scale``.
        title: a first line above the grid; the second explains the titles (:func:`grid_legend`).
        captions: text under each image (file names: shortened to 22 characters), or None.
    """
    from ..utils.figures import agg_figure

    n = len(images)
    if n == 0:
        raise ValueError("no images for the prediction grid")
    if any(x is not None and len(x) != n for x in (pred, true, probs, captions)):
        raise ValueError("images, pred, true, probs and captions must have the same length")
    ncols = max(1, min(int(ncols), n))
    nrows = -(-n // ncols)
    row = scale + 0.45 + (0.2 if captions is not None else 0)
    fig = agg_figure((max(ncols * scale, 5.0), nrows * row + (0.7 if title else 0.4)), layout="constrained")
    for i, image in enumerate(images):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(_as_display(image), interpolation="nearest", cmap="gray")
        ax.set_xticks([])
        ax.set_yticks([])
        text = "pred: " + _label(class_names, pred[i])
        if probs is not None:
            text += f" ({float(probs[i]):.2f})"
        color = UNKNOWN
        if true is not None:
            text += "\ntrue: " + _label(class_names, true[i])
            color = RIGHT if int(pred[i]) == int(true[i]) else WRONG
        ax.set_title(text, fontsize=8, color=color)
        if captions is not None:
            ax.set_xlabel(_short(captions[i]), fontsize=7)
        if color == WRONG:  # a thick red frame, visible at a glance in a large grid
            for spine in ax.spines.values():
                spine.set_color(WRONG)
                spine.set_linewidth(3)
    legend = grid_legend(true is not None, probs is not None)
    fig.suptitle(f"{title}\n{legend}" if title else legend, fontsize=9)
    return fig


def save_prediction_grid(path, images, pred, true=None, class_names=None, probs=None, ncols=9, scale=1.5,
                         title=None, captions=None, metadata=None):
    """Write :func:`prediction_grid` as a PNG (atomically); returns ``path``. ``metadata``: PNG text chunks
    (``{"Source": "..."}``), e.g. which weights made the predictions."""
    from ..utils.figures import save_png

    return save_png(prediction_grid(images, pred, true, class_names, probs, ncols, scale, title, captions), path,
                    metadata=metadata)
