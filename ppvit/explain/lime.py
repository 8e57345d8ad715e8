"""LIME for image classifiers, following interpretdl 0.8's ``LIMECVInterpreter``.

The algorithm (Ribeiro et al. 2016, as implemented by marcotcr/lime and simplified by interpretdl):

1. split the image into superpixels with quickshift;
2. draw ``num_samples`` binary masks over the superpixels (the first one keeps everything) and build the
   perturbed images, switched-off superpixels filled with their own mean colour (or a fixed colour);
3. classify every perturbed image with ``predict_fn`` (``batch_size`` images at a time);
4. weight each sample by ``sqrt(exp(-d**2 / kernel_width**2))``, ``d`` the cosine distance of its mask to
   the all-ones mask, and fit a weighted linear model from masks to the class probability;
5. the model's coefficients are the superpixel weights: ``{class: [(segment_id, weight), ...]}`` sorted by
   ``|weight|``, exactly interpretdl's ``lime_weights``.

The model side is a ``predict_fn(images) -> probabilities [N, num_classes]`` taking an NHWC RGB batch on the
0..255 scale (uint8, or float). :func:`paddle_predict_fn` builds one from a ``paddle.nn.Layer`` and
:func:`predictor_predict_fn` from any callable mapping a normalised NCHW float32 batch to logits (such as the
exported Paddle Inference predictor). ``backend="interpretdl"`` runs interpretdl itself where it is installed.
"""
import inspect
import os
import warnings

import numpy as np
from skimage.color import gray2rgb
from skimage.segmentation import quickshift
from sklearn.linear_model import Ridge
from sklearn.metrics import pairwise_distances
from tqdm import tqdm

from ..constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from ..utils.device import has_gpu
from ..utils.softmax import softmax as _softmax
from .plots import explanation_image, save_lime_figure, save_rgb, show_image

__all__ = [
    "IMAGENET_DEFAULT_MEAN", "IMAGENET_DEFAULT_STD", "QUICKSHIFT_INTERPRETDL", "QUICKSHIFT_LIME", "LimeImageExplainer",
    "MIN_SUPERPIXELS", "scaled_quickshift_kwargs",
    "paddle_predict_fn", "predictor_predict_fn", "load_image", "restore_image",
]

# The notebooks normalise with ImageNet statistics (ppvit.constants), and so does interpretdl's fixed
# preprocessing.

# interpretdl calls ``quickshift(image, sigma=1)``: scikit-image's defaults plus a light blur.
QUICKSHIFT_INTERPRETDL = dict(kernel_size=5, max_dist=10, ratio=1.0, sigma=1)
# marcotcr/lime's ``LimeImageExplainer`` default segmentation, for comparison with lime itself.
QUICKSHIFT_LIME = dict(kernel_size=4, max_dist=200, ratio=0.2)
MIN_SUPERPIXELS = 10
_SHRINK, _MAX_SHRINKS = 0.75, 4


def scaled_quickshift_kwargs(shape):
    """The default quickshift arguments for an image of ``shape`` (H, W, ...): interpretdl's
    (:data:`QUICKSHIFT_INTERPRETDL`: kernel_size 5, max_dist 10, ratio 1, sigma 1) from a 60-pixel shorter side
    up, and on smaller images ``kernel_size = side / 12`` (at least 2) with ``max_dist = 2 * kernel_size``, so
    that 16-32 px images get tens of superpixels (measured on the digits and scikit-image's photos: 27-56 at
    16 px, 19-50 at 32 px) where interpretdl's arguments find 1-14. :meth:`LimeImageExplainer.segment` then
    shrinks both by 3/4 (up to 4 times) while an image still gives fewer than ``MIN_SUPERPIXELS``."""
    side = min(int(shape[0]), int(shape[1]))
    kernel_size = min(float(QUICKSHIFT_INTERPRETDL["kernel_size"]), max(2.0, side / 12.0))
    if kernel_size == QUICKSHIFT_INTERPRETDL["kernel_size"]:
        return dict(QUICKSHIFT_INTERPRETDL)
    return dict(QUICKSHIFT_INTERPRETDL, kernel_size=kernel_size, max_dist=2.0 * kernel_size)

INTERPRETDL_RECIPE = (
    "interpretdl 0.8 pins scikit-learn<=0.24 and imports a removed IPython API, so a plain `pip install "
    "interpretdl` fails on Python >= 3.10. Install it in a venv of its own with:\n"
    "    pip install -r requirements.txt 'numpy<2' 'scikit-learn==1.1.3' 'ipython<9'\n"
    "    pip install --no-deps interpretdl==0.8.0\n"
    "or use the built-in backend (backend='ppvit'), which follows the same algorithm."
)

_BACKENDS = ("ppvit", "interpretdl")
DEFAULT_BATCH_SIZE = 50  # interpretdl's


# ----------------------------------------------------------------------------------------------- model side
def _normalize_nchw(images, mean, std):
    """NHWC RGB batch on the 0..255 scale -> normalised NCHW float32, as the notebooks' test transform."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"predict_fn expects an NHWC RGB batch [N, H, W, 3], got shape {images.shape}")
    x = images.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # N, 3, H, W


def predictor_predict_fn(predictor, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, softmax=True):
    """Wrap ``predictor(nchw_float32) -> logits`` (numpy in, numpy out) into a LIME ``predict_fn``.

    The returned function takes NHWC RGB images on the 0..255 scale, normalises them with ``mean``/``std``,
    calls ``predictor`` and returns softmax probabilities ``[N, C]`` (``softmax=False`` returns its output
    unchanged, for a predictor that already outputs probabilities). Its two halves are exposed as
    ``predict_fn.prepare`` (images -> model input) and ``predict_fn.run`` (model input -> probabilities), so
    that :class:`LimeImageExplainer` can build the next batch while the predictor runs this one, and
    ``predict_fn.batch_size`` is the predictor's own batch size (the batch LIME feeds it by default).
    """
    if not callable(predictor):
        raise TypeError(f"predictor must be callable, got {type(predictor).__name__}")
    mean, std = _check_mean_std(mean, std)

    def prepare(images):
        return _normalize_nchw(images, mean, std)

    def run(x):
        out = predictor(x)
        if isinstance(out, (list, tuple)):
            out = out[0]
        out = np.asarray(out, dtype=np.float64)
        if out.ndim != 2:
            raise ValueError(f"the predictor must return a [N, num_classes] array, got shape {out.shape}")
        return _softmax(out, axis=1) if softmax else out

    def predict_fn(images):
        return run(prepare(images))

    predict_fn.mean, predict_fn.std = mean, std
    predict_fn.prepare, predict_fn.run = prepare, run
    predict_fn.batch_size = getattr(predictor, "batch_size", None)
    return predict_fn


def paddle_predict_fn(model, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, softmax=True):
    """A LIME ``predict_fn`` running a ``paddle.nn.Layer`` (put in eval mode) without gradients."""
    import paddle

    model.eval()

    def run(x):
        with paddle.no_grad():
            out = model(paddle.to_tensor(x))
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out.numpy()

    return predictor_predict_fn(run, mean, std, softmax)


def _is_paddle_layer(obj):
    try:
        import paddle
    except ImportError:  # pragma: no cover - paddle is a hard dependency of ppvit
        return False
    return isinstance(obj, paddle.nn.Layer)


def _check_mean_std(mean, std):
    mean = tuple(float(v) for v in np.ravel(mean))
    std = tuple(float(v) for v in np.ravel(std))
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean and std need 3 values (RGB), got mean={mean}, std={std}")
    if min(std) <= 0:
        raise ValueError(f"std values must be positive, got {std}")
    return mean, std


# ----------------------------------------------------------------------------------------------- image side
def load_image(path, resize_to=224, crop_to=None):
    """Read an image file as RGB uint8 HWC: shorter side resized to ``resize_to``, then a centre square
    crop of ``crop_to`` (interpretdl's ``read_image``). ``resize_to=None`` keeps the original size."""
    import cv2

    from ..io.images import read_image

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: {path}")
    img = read_image(path, "RGB")
    if resize_to is not None:
        h, w = img.shape[:2]
        scale = resize_to / min(h, w)
        size = (int(round(w * scale)), int(round(h * scale)))  # cv2 takes (width, height)
        img = cv2.resize(img, size)
    if crop_to is not None:
        h, w = img.shape[:2]
        if crop_to > min(h, w):
            raise ValueError(f"crop_to={crop_to} is larger than the resized image ({h}x{w})")
        top, left = (h - crop_to) // 2, (w - crop_to) // 2
        img = img[top:top + crop_to, left:left + crop_to]
    return np.ascontiguousarray(img)


def restore_image(chw, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD):
    """Undo the notebooks' normalisation: normalised CHW float -> RGB uint8 HWC (interpretdl's
    ``restore_image``, but clipped and rounded instead of wrapping around on the uint8 cast)."""
    chw = np.asarray(chw, dtype=np.float64)
    img = chw * np.asarray(std).reshape(3, 1, 1) + np.asarray(mean).reshape(3, 1, 1)
    img = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img.transpose(1, 2, 0))  # H, W, 3


def _as_image(data, resize_to, crop_to, mean, std):
    """interpretdl's input rules: a path is read (resized/cropped); an integer array is an RGB HWC image;
    a float array is a normalised CHW tensor (e.g. ``X.numpy()[i]`` from the notebooks' loaders)."""
    if isinstance(data, (str, os.PathLike)):
        return load_image(os.fspath(data), resize_to, crop_to)
    if hasattr(data, "numpy") and not isinstance(data, np.ndarray):  # paddle.Tensor
        data = data.numpy()
    if not isinstance(data, np.ndarray):
        raise TypeError(f"data must be an image path or a numpy array/paddle Tensor, got {type(data).__name__}")
    arr = data
    if arr.ndim == 4:
        if arr.shape[0] != 1:
            raise ValueError(f"LIME explains one image at a time, got a batch of {arr.shape[0]}")
        arr = arr[0]
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        if arr.ndim == 2:
            arr = gray2rgb(arr)
        elif arr.ndim == 3 and arr.shape[-1] == 1:
            arr = gray2rgb(arr[..., 0])
        if arr.ndim != 3 or arr.shape[-1] != 3:
            raise ValueError(f"an integer image must be HWC RGB (H, W, 3) or grayscale (H, W), got {data.shape}")
        if arr.min() < 0 or arr.max() > 255:
            raise ValueError("an integer image must hold values in 0..255")
        return np.ascontiguousarray(arr.astype(np.uint8))
    if np.issubdtype(arr.dtype, np.floating):
        if arr.ndim != 3 or arr.shape[0] != 3:
            raise ValueError(
                f"a float array is read as a normalised CHW tensor (3, H, W), got shape {data.shape}; "
                "pass RGB images as uint8 HWC arrays")
        return restore_image(arr, mean, std)
    raise TypeError(f"unsupported image dtype {arr.dtype}")


# ----------------------------------------------------------------------------------------------- explainer
class LimeImageExplainer:
    """LIME superpixel explanations, with interpretdl ``LIMECVInterpreter``'s arguments and outputs.

    Args:
        model: a ``paddle.nn.Layer`` (wrapped with :func:`paddle_predict_fn`) or a ``predict_fn`` taking an
            NHWC RGB batch on the 0..255 scale and returning probabilities ``[N, num_classes]``.
        random_seed: seeds the sampling (a numpy ``Generator`` made once here, as interpretdl seeds once per
            interpreter) and quickshift. Two explainers with the same seed give identical results for the
            same sequence of calls.
        mean, std: normalisation used to wrap a paddle model and to restore normalised float inputs.
        kernel_width: width of the exponential kernel on cosine distances (lime/interpretdl: 0.25).
        alpha: L2 strength of the weighted Ridge fit. interpretdl fits with ``alpha=0`` (plain weighted least
            squares), marcotcr/lime with ``alpha=1``.
        hide_color: fill for switched-off superpixels: ``None`` = each superpixel's mean colour (the
            default of both), or a grey level / RGB triple on the 0..255 scale.
        quickshift_kwargs: arguments of ``skimage.segmentation.quickshift``, used as given (pass
            :data:`QUICKSHIFT_INTERPRETDL` to segment exactly as interpretdl, :data:`QUICKSHIFT_LIME` as
            marcotcr/lime); None = scaled to each image (:func:`scaled_quickshift_kwargs`: interpretdl's from a
            60 px side up, finer below, so a 16-32 px image gets at least ``MIN_SUPERPIXELS``).
        segmentation_fn: replaces quickshift: ``fn(image_uint8_hwc) -> int labels (H, W)``.
        ratio_superpixels: fraction of the superpixels the overlay may highlight (interpretdl: 0.2).
        progress: show a tqdm bar over the perturbed samples.
        backend: ``"ppvit"`` (this implementation) or ``"interpretdl"`` (needs interpretdl installed and a
            paddle model).
        device: interpretdl backend only: ``"cpu"``, ``"gpu:0"``...; default GPU when Paddle has one.

    After :meth:`interpret`, ``self.lime_results`` holds ``probability`` ({class: p}), ``input`` (the
    uint8 image), ``segmentation``, ``r2_scores``, ``lime_weights`` as interpretdl does, plus ``samples``
    (the binary masks), ``kernel_weights``, ``predictions``, ``intercepts`` and ``explanation`` (the overlay).
    """

    def __init__(self, model, random_seed=None, mean=IMAGENET_DEFAULT_MEAN, std=IMAGENET_DEFAULT_STD, kernel_width=0.25,
                 alpha=0.0, hide_color=None, quickshift_kwargs=None, segmentation_fn=None,
                 ratio_superpixels=0.2, progress=True, backend="ppvit", device=None):
        if backend not in _BACKENDS:
            raise ValueError(f"unknown LIME backend {backend!r}; choose one of {_BACKENDS}")
        valid_seed = isinstance(random_seed, (int, np.integer)) and not isinstance(random_seed, bool)
        if random_seed is not None and not (valid_seed and random_seed >= 0):
            raise ValueError(f"random_seed must be a non-negative int or None, got {random_seed!r}")
        if not kernel_width > 0:
            raise ValueError(f"kernel_width must be positive, got {kernel_width}")
        if not alpha >= 0:
            raise ValueError(f"alpha must be >= 0, got {alpha}")
        if not 0 < ratio_superpixels <= 1:
            raise ValueError(f"ratio_superpixels must be in (0, 1], got {ratio_superpixels}")
        if segmentation_fn is not None and not callable(segmentation_fn):
            raise TypeError("segmentation_fn must be callable")
        self.mean, self.std = _check_mean_std(mean, std)
        self.hide_color = self._check_hide_color(hide_color)
        self.backend = backend
        self.model = model
        if _is_paddle_layer(model):
            self.predict_fn = paddle_predict_fn(model, self.mean, self.std)
        elif callable(model):
            if backend == "interpretdl":
                raise ValueError("backend='interpretdl' needs a paddle.nn.Layer, not a predict_fn")
            self.predict_fn = model
        else:
            raise TypeError(f"model must be a paddle.nn.Layer or a callable predict_fn, got {type(model).__name__}")
        if backend == "interpretdl":
            self._interpretdl = _import_interpretdl()
            if (self.mean, self.std) != (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD):
                warnings.warn("interpretdl always normalises with ImageNet mean/std; the given mean/std are "
                              "ignored by that backend", stacklevel=2)
        self.random_seed = random_seed
        self.rng = np.random.default_rng(random_seed)
        self.kernel_width = float(kernel_width)
        self.alpha = float(alpha)
        # None: scaled to each image by segment()
        self.quickshift_kwargs = None if quickshift_kwargs is None else dict(quickshift_kwargs)
        self.segmentation_fn = segmentation_fn
        self.ratio_superpixels = float(ratio_superpixels)
        self.progress = progress
        self.device = device
        self.segment_kwargs = None  # the quickshift arguments of the last segment() call
        self.lime_results = {}

    # ---------------------------------------------------------------------------------------------- public
    def interpret(self, data, interpret_class=None, top_k=1, num_samples=1000, batch_size=None, resize_to=224,
                  crop_to=None, visual=True, save_path=None):
        """Explain one image; returns ``lime_weights = {class: [(segment_id, weight), ...]}``.

        Args:
            data: an image path (read, shorter side resized to ``resize_to``, centre-cropped to
                ``crop_to``), an RGB uint8 HWC array, or a normalised float CHW array/tensor. Arrays are
                used at their own size, as in interpretdl.
            interpret_class: class index or list of indices to explain; ``None`` = the ``top_k`` most
                probable classes (most probable first).
            top_k: number of top classes when ``interpret_class`` is None.
            num_samples: perturbed samples (the first is the unperturbed image).
            batch_size: images per ``predict_fn`` call; None = the predictor's own batch size when ``predict_fn``
                wraps one (:func:`predictor_predict_fn`: large batches keep its engine busy), else 50
                (interpretdl's default).
            visual: show the overlay with matplotlib (skipped on non-interactive backends).
            save_path: write the overlay image (PNG) there.
        """
        self._check_args(interpret_class, top_k, num_samples, batch_size, resize_to, crop_to)
        if batch_size is None:
            batch_size = int(getattr(self.predict_fn, "batch_size", None) or DEFAULT_BATCH_SIZE)
        if self.backend == "interpretdl":
            return self._interpret_interpretdl(data, interpret_class, top_k, num_samples, batch_size,
                                               resize_to, crop_to, visual, save_path)

        image = _as_image(data, resize_to, crop_to, self.mean, self.std)
        segments = self.segment(image)
        # the first sample is the unperturbed image: its prediction picks (and checks) the classes as soon as
        # the first batch is back, with no separate batch-of-one call
        samples, predictions = self._sample(image, segments, num_samples, batch_size,
                                            on_first=lambda p: self._classes(p, interpret_class, top_k))
        probability = predictions[0]
        classes = self._classes(probability, interpret_class, top_k)

        # cosine distance of each mask to the all-ones mask of the original image
        distances = pairwise_distances(samples, samples[:1], metric="cosine").ravel()
        kernel_weights = np.sqrt(np.exp(-distances ** 2 / self.kernel_width ** 2))
        lime_weights, r2_scores, intercepts = {}, {}, {}
        for c in classes:
            intercepts[c], lime_weights[c], r2_scores[c] = self._fit(samples, predictions[:, c], kernel_weights)

        self.lime_results = dict(
            probability={c: float(probability[c]) for c in classes}, input=image, segmentation=segments,
            r2_scores=r2_scores, lime_weights=lime_weights, intercepts=intercepts, samples=samples,
            kernel_weights=kernel_weights, predictions=predictions, classes=classes,
            quickshift_kwargs=self.segment_kwargs,
        )
        if visual or save_path is not None:
            vis = explanation_image(image, segments, lime_weights[classes[0]], self.ratio_superpixels)
            self.lime_results["explanation"] = vis
            if visual:
                show_image(vis)
            if save_path is not None:
                save_rgb(save_path, vis)
        return lime_weights

    def segment(self, image):
        """Superpixels of an RGB uint8 image, relabelled 0..n-1 (the features LIME switches on and off).

        With ``quickshift_kwargs=None`` the arguments are :func:`scaled_quickshift_kwargs` of the image,
        ``kernel_size`` and ``max_dist`` shrunk by 3/4 (up to 4 times) while fewer than ``MIN_SUPERPIXELS``
        come out; the arguments used are kept in ``self.segment_kwargs``."""
        if self.segmentation_fn is not None:
            segments = np.asarray(self.segmentation_fn(image))
            self.segment_kwargs = None
        else:
            seed = {_QUICKSHIFT_SEED_ARG: 42 if self.random_seed is None else int(self.random_seed)}
            if self.quickshift_kwargs is not None:  # explicit arguments win, used as given
                kwargs = dict(seed, **self.quickshift_kwargs)
                segments = quickshift(image, **kwargs)
            else:
                kwargs = dict(seed, **scaled_quickshift_kwargs(image.shape))
                segments = quickshift(image, **kwargs)
                for _ in range(_MAX_SHRINKS):
                    if len(np.unique(segments)) >= MIN_SUPERPIXELS or kwargs["kernel_size"] <= 1:
                        break
                    kwargs.update(kernel_size=max(1.0, kwargs["kernel_size"] * _SHRINK),
                                  max_dist=kwargs["max_dist"] * _SHRINK)
                    segments = quickshift(image, **kwargs)
            self.segment_kwargs = {k: v for k, v in kwargs.items() if k != _QUICKSHIFT_SEED_ARG}
        if segments.shape != image.shape[:2]:
            raise ValueError(f"segmentation shape {segments.shape} differs from the image's {image.shape[:2]}")
        _, segments = np.unique(segments, return_inverse=True)
        segments = segments.reshape(image.shape[:2]).astype(np.int64)
        _warn_if_few_superpixels(int(segments.max()) + 1, image.shape, self.segmentation_fn is not None,
                                 scaled=self.segmentation_fn is None and self.quickshift_kwargs is None)
        return segments

    def explanation(self, interpret_class=None, boundaries=True):
        """The overlay for one explained class of the last :meth:`interpret` call (default: the first)."""
        res = self._last_results()
        c = res["classes"][0] if interpret_class is None else int(interpret_class)
        if c not in res["lime_weights"]:
            raise KeyError(f"class {c} was not explained; explained classes: {list(res['lime_weights'])}")
        return explanation_image(res["input"], res["segmentation"], res["lime_weights"][c],
                                 self.ratio_superpixels, boundaries=boundaries)

    def save_figure(self, path, class_names=None, title=None, interpret_class=None, metadata=None):
        """PNG with the image, its superpixels and the explanation of each explained class side by side
        (``metadata``: PNG text chunks, e.g. ``{"Source": "weights ..."}``)."""
        res = self._last_results()
        classes = res["classes"] if interpret_class is None else [int(interpret_class)]
        return save_lime_figure(path, res["input"], res["segmentation"], res["lime_weights"], classes=classes,
                                probabilities=res["probability"], class_names=class_names, title=title,
                                ratio_superpixels=self.ratio_superpixels, metadata=metadata)

    # ---------------------------------------------------------------------------------------------- steps
    def _predict(self, images, run=None, n=None):
        probs = (run or self.predict_fn)(images)
        n = len(images) if n is None else n
        if isinstance(probs, (list, tuple)):
            probs = probs[0]
        probs = np.asarray(probs)
        if probs.ndim != 2 or probs.shape[0] != n:
            raise ValueError(f"predict_fn must return [N, num_classes] for N={n} images, "
                             f"got shape {probs.shape}")
        return probs

    def _sample(self, image, segments, num_samples, batch_size, on_first=None):
        """Binary masks over superpixels and the predictions on the images they make.

        ``on_first(probabilities)`` is called with the unperturbed image's prediction (sample 0) as soon as the
        first batch is classified (an exception it raises stops the sampling). Each distinct mask is
        classified once. When ``predict_fn`` exposes ``prepare``/``run`` (see
        :func:`predictor_predict_fn`), a worker thread builds and normalises batch i+1 while the model runs
        batch i. That overlaps where the engine releases the GIL (ONNX Runtime, numpy); Paddle Inference holds
        it for the whole run, so there the build (~3 ms per 64 32x32 images) waits its turn. The results are the
        same as calling
        ``predict_fn`` batch by batch.
        """
        n_features = int(segments.max()) + 1
        fudged = self._fudged_image(image, segments, n_features)
        samples = self.rng.integers(0, 2, size=(num_samples, n_features), dtype=np.int64)
        samples[0, :] = 1  # the unperturbed image anchors the fit
        # a mask drawn twice makes the same image: classify each distinct one once (small images have few
        # superpixels, and 1000 masks over ~10 of them repeat often); rows map back through `inverse`
        distinct, first, inverse = np.unique(samples.astype(bool), axis=0, return_index=True, return_inverse=True)
        order = np.argsort(first)  # distinct masks in the order they were drawn (the unperturbed image first)
        on = distinct[order]
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        inverse = rank[inverse.ravel()]
        starts = range(0, len(on), batch_size)
        prepare = getattr(self.predict_fn, "prepare", None)
        run = getattr(self.predict_fn, "run", None)
        split = callable(prepare) and callable(run)

        def build(start):
            keep = on[start:start + batch_size][:, segments][..., None]  # B, H, W, 1
            batch = np.where(keep, image[None], fudged[None])  # B, H, W, 3 uint8
            return (prepare(batch) if split else batch), len(batch)

        predictions = []

        def done(probs, bar):
            if not predictions and on_first is not None:
                on_first(probs[0])
            predictions.append(probs)
            bar.update(len(probs))

        with tqdm(total=len(on), desc="LIME", unit="img", disable=not self.progress) as bar:
            if not split or len(starts) == 1:
                for start in starts:
                    batch, n = build(start)
                    done(self._predict(batch, run if split else None, n), bar)
            else:
                from concurrent.futures import ThreadPoolExecutor

                with ThreadPoolExecutor(max_workers=1) as pool:
                    pending = pool.submit(build, starts[0])
                    for i in range(len(starts)):
                        batch, n = pending.result()
                        if i + 1 < len(starts):
                            pending = pool.submit(build, starts[i + 1])
                        done(self._predict(batch, run, n), bar)
        return samples, np.concatenate(predictions, axis=0)[inverse]

    def _fudged_image(self, image, segments, n_features):
        if self.hide_color is not None:
            return np.broadcast_to(np.asarray(self.hide_color, np.uint8), image.shape).copy()
        # each superpixel replaced by its mean colour, computed once for all of them
        counts = np.bincount(segments.ravel(), minlength=n_features)
        sums = np.stack([np.bincount(segments.ravel(), weights=image[..., ch].ravel(), minlength=n_features)
                         for ch in range(image.shape[-1])], axis=1)
        # cast like lime/interpretdl, which assign the float mean into a copy of the uint8 image
        means = (sums / counts[:, None]).astype(image.dtype)
        return means[segments]

    def _fit(self, samples, target, kernel_weights):
        # alpha=0 is plain least squares; the SVD solver gives the minimum-norm solution instead of an
        # ill-conditioned Cholesky solve when samples are fewer than superpixels or masks repeat
        model = Ridge(alpha=self.alpha, fit_intercept=True, solver="svd" if self.alpha == 0 else "auto")
        model.fit(samples, target, sample_weight=kernel_weights)
        r2 = float(model.score(samples, target, sample_weight=kernel_weights))
        order = np.argsort(-np.abs(model.coef_), kind="stable")
        weights = [(int(i), float(model.coef_[i])) for i in order]
        return float(model.intercept_), weights, r2

    # ---------------------------------------------------------------------------------------------- helpers
    def _classes(self, probability, interpret_class, top_k):
        num_classes = probability.shape[0]
        if interpret_class is None:
            if top_k > num_classes:
                raise ValueError(f"top_k={top_k} exceeds the model's {num_classes} classes")
            return [int(c) for c in np.argsort(-probability, kind="stable")[:top_k]]
        classes = [int(c) for c in np.ravel(interpret_class)]
        bad = [c for c in classes if not 0 <= c < num_classes]
        if bad:
            raise ValueError(f"interpret_class {bad} out of range for a model with {num_classes} classes")
        return classes

    @staticmethod
    def _check_args(interpret_class, top_k, num_samples, batch_size, resize_to, crop_to):
        def positive_int(name, v, allow_none=False):
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}, got {v!r}")

        positive_int("top_k", top_k)
        positive_int("num_samples", num_samples)
        positive_int("batch_size", batch_size, allow_none=True)
        positive_int("resize_to", resize_to, allow_none=True)
        positive_int("crop_to", crop_to, allow_none=True)
        if num_samples < 2:
            raise ValueError(f"num_samples must be at least 2 to fit a linear model, got {num_samples}")
        if interpret_class is not None:
            flat = np.ravel(interpret_class)
            if flat.size == 0 or not all(np.issubdtype(np.asarray(c).dtype, np.integer) for c in flat):
                raise ValueError(f"interpret_class must be a class index or a list of them, got {interpret_class!r}")

    @staticmethod
    def _check_hide_color(hide_color):
        if hide_color is None:
            return None
        color = np.ravel(np.asarray(hide_color, dtype=np.float64))
        if color.size not in (1, 3) or color.min() < 0 or color.max() > 255:
            raise ValueError(f"hide_color must be None, a grey level or an RGB triple in 0..255, got {hide_color!r}")
        return tuple(np.broadcast_to(color, (3,)).tolist())

    def _last_results(self):
        if not self.lime_results:
            raise RuntimeError("call interpret() first")
        return self.lime_results

    def _interpret_interpretdl(self, data, interpret_class, top_k, num_samples, batch_size, resize_to,
                               crop_to, visual, save_path):
        device = self.device
        if device is None:
            device = "gpu:0" if has_gpu() else "cpu"
        interpreter = self._interpretdl.LIMECVInterpreter(self.model, device=device, random_seed=self.random_seed)
        if hasattr(data, "numpy") and not isinstance(data, np.ndarray):
            data = data.numpy()
        if isinstance(interpret_class, (tuple, np.ndarray)):
            interpret_class = [int(c) for c in np.ravel(interpret_class)]
        lime_weights = interpreter.interpret(
            os.fspath(data) if isinstance(data, os.PathLike) else data, interpret_class=interpret_class,
            top_k=top_k, num_samples=num_samples, batch_size=batch_size, resize_to=resize_to, crop_to=crop_to,
            visual=visual, save_path=save_path)
        res = dict(getattr(interpreter, "lime_results", {}))
        res["lime_weights"] = lime_weights
        res["classes"] = [int(c) for c in lime_weights]
        self.lime_results = res
        return lime_weights


class FewSuperpixelsWarning(UserWarning):
    """The segmentation gave LIME fewer than ``MIN_SUPERPIXELS`` features: its explanation says little."""


def _warn_if_few_superpixels(count, shape, custom_segmentation, scaled=False):
    """Warn, naming the arguments that give more superpixels, when there are fewer than ``MIN_SUPERPIXELS``
    (quickshift with interpretdl's defaults finds 1-4 on a 16x16 image, 40+ with kernel_size=2, max_dist=4)."""
    if count >= MIN_SUPERPIXELS:
        return
    how = ("pass a segmentation_fn that returns more segments" if custom_segmentation else
           "ask quickshift for smaller ones: quickshift_kwargs=dict(kernel_size=2, max_dist=4, ratio=1.0, sigma=1) "
           + ("" if scaled else "or leave quickshift_kwargs unset (scaled to the image) ")
           + "(smaller kernel_size and max_dist give more; ppvit explain: -o Explain.kernel_size=2 "
           "-o Explain.max_dist=4)")
    warnings.warn(f"LIME found only {count} superpixel{'s' * (count != 1)} in this {shape[0]}x{shape[1]} image "
                  f"(fewer than {MIN_SUPERPIXELS}), so its explanation says little; {how}, or explain a larger "
                  "image (resize_to= for image files)", FewSuperpixelsWarning, stacklevel=3)


def _quickshift_seed_arg():
    # scikit-image renamed quickshift's ``random_seed`` to ``rng`` in 0.22
    params = inspect.signature(quickshift).parameters
    return "rng" if "rng" in params else "random_seed"


_QUICKSHIFT_SEED_ARG = _quickshift_seed_arg()


def _import_interpretdl():
    try:
        import interpretdl
    except ImportError as e:
        raise ImportError(f"backend='interpretdl' needs the interpretdl package ({e}). {INTERPRETDL_RECIPE}") from e
    if not hasattr(interpretdl, "LIMECVInterpreter"):
        raise ImportError(f"this interpretdl has no LIMECVInterpreter. {INTERPRETDL_RECIPE}")
    return interpretdl
