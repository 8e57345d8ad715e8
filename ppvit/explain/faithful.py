"""How faithful an explanation is: the deletion and insertion curves of RISE (Petsiuk et al. 2018, "RISE:
Randomized Input Sampling for Explanation of Black-box Models", arXiv:1806.07421), each against a random ranking.

An explanation ranks the pixels (its saliency map). **Deletion** removes the top-ranked pixels first, a growing
fraction at a time, and follows the explained class's probability: a faithful map makes it fall fast (a low area
under the curve). **Insertion** starts from an image with the information removed and reveals the top-ranked pixels
first: a faithful map makes the probability rise fast (a high area). The same curves for random rankings (the mean
of ``n_random`` of them) are the baseline: ``deletion_gain = deletion_auc_random - deletion_auc`` and
``insertion_gain = insertion_auc - insertion_auc_random`` are positive for a map better than chance.

Removed pixels take the normalisation mean's colour (0 in the model's normalised input, RISE's deletion
substrate); insertion starts from the image blurred with a Gaussian of sigma ``max(H, W) / 8`` pixels (RISE's
insertion substrate, its width scaled with the image: on 16 px digits a trained model still gives the class ~0.8
probability through a blur of sigma H/16, ~0.2 through H/8). Ties in the saliency are broken at random, so a flat map
is a random ranking.
"""
import numpy as np

__all__ = ["faithfulness", "lime_saliency", "removal_curve"]

DEFAULT_STEPS = 20  # fractions 0, 0.05, ..., 1 (0.25 among them)


def lime_saliency(segments, weights):
    """A pixel map of one class's LIME explanation: each pixel gets its superpixel's weight.

    ``segments``: int labels ``[H, W]`` (0..n-1); ``weights``: ``[(segment_id, weight), ...]``. Returns float64
    ``[H, W]``."""
    table = np.zeros(int(np.max(segments)) + 1)
    for sp, w in weights:
        table[int(sp)] = w
    return table[np.asarray(segments)]


def _ranking(saliency, rng):
    """Pixel indices, most salient first; ties in random order."""
    flat = np.asarray(saliency, np.float64).ravel()
    return np.lexsort((rng.permutation(flat.size), -flat))


def _blur(image):
    import cv2

    sigma = max(image.shape[:2]) / 8.0
    return cv2.GaussianBlur(np.asarray(image, np.float32), (0, 0), sigmaX=sigma, sigmaY=sigma,
                            borderType=cv2.BORDER_REFLECT)


def removal_curve(predict_fn, image, order, class_id, fractions, start, end, batch_size=64):
    """The explained class's probability along a path from ``start`` to ``end`` (both ``[H, W, 3]`` float,
    0..255): at each fraction ``f`` the first ``f`` of the pixels in ``order`` take ``end``'s values, the others
    ``start``'s. Returns float64 ``[len(fractions)]``."""
    h, w = image.shape[:2]
    counts = np.rint(np.asarray(fractions) * h * w).astype(int)
    rank = np.empty(h * w, np.int64)
    rank[order] = np.arange(h * w)
    rank = rank.reshape(h, w, 1)
    out = []
    for i in range(0, len(counts), batch_size):
        batch = np.stack([np.where(rank < k, end, start) for k in counts[i:i + batch_size]])
        probs = np.asarray(predict_fn(batch.astype(np.float32)))
        out.append(probs[:, class_id])
    return np.concatenate(out).astype(np.float64)


def faithfulness(predict_fn, image, saliency, class_id, steps=DEFAULT_STEPS, n_random=3, seed=0, mean=None,
                 batch_size=64):
    """Deletion and insertion curves of one explanation, with their AUC against random rankings.

    Args:
        predict_fn: NHWC RGB batch on the 0..255 scale (float) -> probabilities ``[N, num_classes]``, as
            :func:`ppvit.explain.paddle_predict_fn` / :func:`~ppvit.explain.predictor_predict_fn` make.
        image: RGB HWC, uint8 or float on 0..255.
        saliency: ``[H, W]``; larger = more important for ``class_id`` (a Grad-CAM map, :func:`lime_saliency`).
        class_id: the explained class.
        steps: the curves are sampled at ``steps + 1`` evenly spaced fractions of the pixels, 0 to 1.
        n_random: random rankings averaged for the baseline.
        seed: seeds the tie-breaking and the random rankings.
        mean: the normalisation mean (RGB, 0..1 scale): the colour of deleted pixels; None = ``predict_fn.mean``
            where it has one (the predict_fn makers set it), else ImageNet's.

    Returns a JSON-ready dict: ``fractions``; the curves ``deletion``, ``insertion``, ``deletion_random``,
    ``insertion_random`` (probabilities of ``class_id``); their AUCs (trapezoid over the fractions, in [0, 1])
    ``deletion_auc``, ``insertion_auc``, ``deletion_auc_random``, ``insertion_auc_random``; ``deletion_gain``
    and ``insertion_gain`` (positive = better than random); ``class_id``. Costs ``2 * (steps + 1) *
    (1 + n_random)`` forward passes. Raises ValueError for mismatched shapes or bad arguments.
    """
    image = np.asarray(image, np.float32)
    saliency = np.asarray(saliency, np.float64)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be RGB HWC [H, W, 3], got shape {image.shape}")
    if saliency.shape != image.shape[:2]:
        raise ValueError(f"saliency shape {saliency.shape} differs from the image's {image.shape[:2]}")
    if int(steps) < 1 or int(n_random) < 1:
        raise ValueError(f"steps and n_random must be >= 1, got {steps}, {n_random}")
    rng = np.random.default_rng(seed)
    fractions = np.linspace(0.0, 1.0, int(steps) + 1)
    if mean is None:
        from ..constants import IMAGENET_DEFAULT_MEAN

        mean = getattr(predict_fn, "mean", IMAGENET_DEFAULT_MEAN)
    grey = np.broadcast_to(np.asarray(mean, np.float32) * 255.0, image.shape)
    blurred = _blur(image)

    def curves(order):
        deletion = removal_curve(predict_fn, image, order, class_id, fractions, image, grey, batch_size)
        insertion = removal_curve(predict_fn, image, order, class_id, fractions, blurred, image, batch_size)
        return deletion, insertion

    deletion, insertion = curves(_ranking(saliency, rng))
    randoms = [curves(rng.permutation(saliency.size)) for _ in range(int(n_random))]
    deletion_random = np.mean([d for d, _ in randoms], axis=0)
    insertion_random = np.mean([i for _, i in randoms], axis=0)
    auc = {name: float(np.trapezoid(curve, fractions)) if hasattr(np, "trapezoid") else
           float(np.trapz(curve, fractions))
           for name, curve in (("deletion_auc", deletion), ("insertion_auc", insertion),
                               ("deletion_auc_random", deletion_random), ("insertion_auc_random", insertion_random))}
    return dict(
        class_id=int(class_id), fractions=[float(f) for f in fractions],
        deletion=deletion.tolist(), insertion=insertion.tolist(),
        deletion_random=deletion_random.tolist(), insertion_random=insertion_random.tolist(),
        **auc,
        deletion_gain=auc["deletion_auc_random"] - auc["deletion_auc"],
        insertion_gain=auc["insertion_auc"] - auc["insertion_auc_random"],
    )
