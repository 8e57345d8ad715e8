"""Pictures of explanations, saved as PNG without a display: LIME's (interpretdl's thresholded overlay,
superpixel boundaries, image | superpixels | explanation per class) and Grad-CAM's (image | heat map per class |
the faithfulness curves)."""
import os

import numpy as np
from skimage.segmentation import mark_boundaries

__all__ = ["explanation_mask", "overlay_threshold", "explanation_image", "superpixel_image", "save_rgb",
           "show_image", "lime_figure", "save_lime_figure", "gradcam_figure", "save_gradcam_figure",
           "faithfulness_text"]

BOUNDARY_COLOR = (1.0, 1.0, 0.0)  # lime's yellow


def explanation_mask(segments, weights, ratio_superpixels=0.2):
    """1 on the highlighted superpixels: the positive ones among the ``ratio_superpixels`` fraction with the
    largest ``|weight|`` (interpretdl's ``sp_weights_to_image_explanation``).

    ``weights`` is one class's ``[(segment_id, weight), ...]`` sorted by ``|weight|``. interpretdl takes
    ``int(ratio * n)`` superpixels, which is 0 for images with fewer than 5 superpixels; at least one is
    kept here so small (32x32) images still show their strongest positive superpixel.
    """
    num = max(1, int(ratio_superpixels * len(weights)))
    chosen = [sp for sp, w in weights if w > 0][:num]
    return np.isin(segments, chosen).astype(np.uint8)


def overlay_threshold(image, mask):
    """interpretdl's LIME overlay: the mask in the green channel at 60 %, the image at 40 %."""
    tint = np.zeros_like(image, dtype=np.uint8)
    tint[..., 1] = mask.astype(np.uint8) * 255
    return np.uint8(tint * 0.6 + image * 0.4)


def explanation_image(image, segments, weights, ratio_superpixels=0.2, boundaries=True):
    """The overlay for one class, with the highlighted region outlined (``skimage`` ``mark_boundaries``)
    when ``boundaries``; ``boundaries=False`` gives exactly interpretdl's picture."""
    mask = explanation_mask(segments, weights, ratio_superpixels)
    vis = overlay_threshold(image, mask)
    if boundaries and mask.any():
        vis = _to_uint8(mark_boundaries(vis, mask, color=BOUNDARY_COLOR))
    return vis


def superpixel_image(image, segments):
    """The image with every superpixel outlined."""
    return _to_uint8(mark_boundaries(image, segments, color=BOUNDARY_COLOR))


def _to_uint8(float_image):
    return np.clip(np.rint(np.asarray(float_image) * 255.0), 0, 255).astype(np.uint8)


def save_rgb(path, image):
    """Write an RGB uint8 image as PNG, atomically."""
    import matplotlib.image as mpimg

    from ..io import atomic_path

    with atomic_path(path) as tmp:
        mpimg.imsave(tmp, np.asarray(image), format="png")
    return os.fspath(path)


def show_image(image):
    """Display an image in a notebook or GUI; a no-op on non-interactive backends such as Agg."""
    import matplotlib
    import matplotlib.pyplot as plt

    if matplotlib.get_backend().lower() in ("agg", "pdf", "ps", "svg", "cairo", "template"):
        return
    plt.figure()
    plt.imshow(image)
    plt.axis("off")
    plt.show()


def save_lime_figure(path, image, segments, lime_weights, classes=None, probabilities=None, class_names=None,
                     title=None, ratio_superpixels=0.2, dpi=100, min_display=160, metadata=None):
    """Save :func:`lime_figure` as a PNG (atomically); returns ``path``. ``metadata``: PNG text chunks, e.g.
    which weights were explained."""
    from ..utils.figures import save_png

    return save_png(lime_figure(image, segments, lime_weights, classes, probabilities, class_names, title,
                                ratio_superpixels, dpi, min_display), path, metadata=metadata)


def lime_figure(image, segments, lime_weights, classes=None, probabilities=None, class_names=None, title=None,
                ratio_superpixels=0.2, dpi=100, min_display=160):
    """image | superpixels | explanation (one panel per class in ``classes``), with a legend saying what the
    overlay's green and yellow mean; a ``matplotlib.figure.Figure`` on an Agg canvas (pyplot untouched).

    Images smaller than ``min_display`` pixels are enlarged (nearest neighbour) for the figure only.
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    from ..utils.figures import agg_figure

    classes = list(lime_weights) if classes is None else [int(c) for c in classes]
    missing = [c for c in classes if c not in lime_weights]
    if missing:
        raise KeyError(f"classes {missing} were not explained; explained classes: {list(lime_weights)}")
    probabilities = probabilities or {}

    # enlarge small (CIFAR-sized) images so one-pixel boundaries do not bury them
    scale = max(1, -(-min_display // min(image.shape[:2])))
    if scale > 1:
        image = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
        segments = np.repeat(np.repeat(segments, scale, axis=0), scale, axis=1)
    panels = [("image", image), (f"superpixels ({int(segments.max()) + 1})", superpixel_image(image, segments))]
    for c in classes:
        name = class_names[c] if class_names is not None and c < len(class_names) else f"class {c}"
        label = f"LIME: {name}" + (f" ({probabilities[c]:.2f})" if c in probabilities else "")
        panels.append((label, explanation_image(image, segments, lime_weights[c], ratio_superpixels)))

    # one legend entry per line below the panels: in two columns the longest labels ran past a 3-panel figure
    fig = agg_figure((max(3.0 * len(panels), 9.0), 4.3 if title else 4.0), dpi=dpi, layout="constrained")
    for i, (label, picture) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    handles = [Patch(facecolor=(0.0, 0.6, 0.0), label="raises the class's probability most (positive LIME "
                     f"weight, top {ratio_superpixels:.0%} by |weight|)"),
               Patch(facecolor=(0.4, 0.4, 0.4), label="other superpixels (dimmed)"),
               Line2D([], [], color=BOUNDARY_COLOR, lw=2,
                      label="superpixel boundaries (in LIME panels: around the highlighted ones)")]
    fig.legend(handles=handles, loc="outside lower center", ncol=1, fontsize=8, frameon=False)
    return fig


def faithfulness_text(res):
    """One line for a :func:`ppvit.explain.faithfulness` result: the deletion and insertion AUCs, each with the
    random ranking's in brackets."""
    return (f"deletion AUC {res['deletion_auc']:.2f} (random {res['deletion_auc_random']:.2f}), "
            f"insertion AUC {res['insertion_auc']:.2f} (random {res['insertion_auc_random']:.2f})")


def _enlarge(image, min_display):
    scale = max(1, -(-min_display // min(image.shape[:2])))
    return np.repeat(np.repeat(image, scale, axis=0), scale, axis=1) if scale > 1 else image


def gradcam_figure(image, maps, probabilities=None, class_names=None, title=None, faithfulness=None, dpi=100,
                   min_display=160):
    """image | Grad-CAM overlay per class | deletion and insertion curves (of the first class with a
    faithfulness result, against the random ranking); a ``Figure`` on an Agg canvas.

    ``image``: RGB uint8 HWC; ``maps``: ``{class: [H, W] map in [0, 1]}`` (``GradCAM`` output); ``faithfulness``:
    ``{class: ppvit.explain.faithfulness(...) result}``. Small images are enlarged (nearest) for display.
    """
    from .gradcam import gradcam_overlay
    from ..utils.figures import agg_figure

    probabilities, faithfulness = probabilities or {}, faithfulness or {}
    panels = [("image", _enlarge(image, min_display))]
    for c, cam in maps.items():
        name = class_names[c] if class_names is not None and c < len(class_names) else f"class {c}"
        label = f"Grad-CAM: {name}" + (f" ({probabilities[c]:.2f})" if c in probabilities else "")
        panels.append((label, _enlarge(gradcam_overlay(image, cam), min_display)))
    curves = next(((c, faithfulness[c]) for c in maps if c in faithfulness), None)
    n = len(panels) + (curves is not None)
    fig = agg_figure((max(3.0 * n, 9.0), 4.3 if title else 4.0), dpi=dpi, layout="constrained")
    for i, (label, picture) in enumerate(panels):
        ax = fig.add_subplot(1, n, i + 1)
        ax.imshow(picture, interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.axis("off")
    if curves is not None:
        c, res = curves
        ax = fig.add_subplot(1, n, n)
        f = res["fractions"]
        ax.plot(f, res["deletion"], color="tab:red", label=f"deletion (AUC {res['deletion_auc']:.2f})")
        ax.plot(f, res["deletion_random"], color="tab:red", ls="--", alpha=0.6,
                label=f"random (AUC {res['deletion_auc_random']:.2f})")
        ax.plot(f, res["insertion"], color="tab:green", label=f"insertion (AUC {res['insertion_auc']:.2f})")
        ax.plot(f, res["insertion_random"], color="tab:green", ls="--", alpha=0.6,
                label=f"random (AUC {res['insertion_auc_random']:.2f})")
        ax.set_xlim(0, 1)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("fraction of pixels removed / revealed", fontsize=8)
        ax.set_ylabel("probability", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.set_title("faithfulness", fontsize=10)
        ax.legend(fontsize=6, loc="best")
    if title:
        fig.suptitle(title, fontsize=11)
    fig.supxlabel("red = where the class's gradient-weighted features are strongest (Grad-CAM, last "
                  "spatial layer); faithful maps: deletion falls faster, insertion rises faster than random",
                  fontsize=7)
    return fig


def save_gradcam_figure(path, image, maps, probabilities=None, class_names=None, title=None, faithfulness=None,
                        metadata=None):
    """Save :func:`gradcam_figure` as a PNG (atomically); returns ``path``."""
    from ..utils.figures import save_png

    return save_png(gradcam_figure(image, maps, probabilities, class_names, title, faithfulness), path,
                    metadata=metadata)
