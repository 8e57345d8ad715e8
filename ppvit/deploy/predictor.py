"""Run an exported model through the fastest backend verified at export, and classify image files with it.

``Predictor(prefix)`` reads ``<prefix>.meta.json``: ``backend: auto`` (the default) runs the backend that
export found fastest among those that reproduced the dygraph model (``backends.py`` lists them); a named
backend runs only if export verified it, otherwise ``Predictor`` refuses with the reason. A file changed since
it was verified (its sha256 differs) is refused too; under ``auto`` the next-fastest verified backend with
intact files is used instead, with a warning. Files are hashed once, at export: a file whose size, mtime and
ctime are those export recorded is the one it hashed and is not read again; any other is hashed and compared. A
program without ppvit's verification records (saved by ``paddle.jit.save`` alone) runs ``paddle`` fp32 (the
program itself) only. On a CUDA build with a visible GPU, ``device="auto"`` runs Paddle Inference on the GPU.
"""
import logging
import os

import numpy as np

from ..io.images import IMAGE_EXTENSIONS, ImageReadError, read_image, walk_files  # noqa: F401  (re-exported by ppvit.deploy)
from ..utils.device import resolve_device
from ..utils.softmax import softmax  # noqa: F401  (re-exported by ppvit.deploy)
from .backends import AUTO, BACKENDS, ONNXRUNTIME, PADDLE, default_threads
from .export import file_stat, open_backend, read_meta, sha256_file

logger = logging.getLogger("ppvit")



class BackendError(ValueError):
    """A backend that cannot be served for this export (not verified, unknown, or its files changed)."""


# what tools/export.py (``ppvit.commands.export``) names the files in its Export.output folder, as PaddleClas does
EXPORT_PREFIX = "inference"
EXPORT_SUFFIXES = (".meta.json", ".json", ".pdmodel", ".pdiparams")


class MissingExportError(FileNotFoundError):
    """No exported model at a path (``missing_export_message``): what tools/export.py would make."""


def export_prefix_of(path):
    """``path`` without its export file suffix (``.meta.json``, ``.json``, ``.pdmodel``, ``.pdiparams``), or None
    when it has none."""
    return next((path[: -len(e)] for e in EXPORT_SUFFIXES if path.endswith(e)), None)


def missing_export_message(path):
    """``no exported model at <path>: expected <the files>`` naming the files an export for ``path`` would
    have written: ``<path>/inference.json`` + ``.pdiparams`` for a folder (what tools/export.py writes into
    its Export.output folder), ``<path>.json`` + ``.pdiparams`` for a prefix or one of its files, both when a
    missing ``path`` could be either."""
    path = os.fspath(path)
    in_folder = os.path.join(path, EXPORT_PREFIX)
    folder_form = f"{in_folder}.json and {in_folder}.pdiparams"
    if os.path.isdir(path):
        return f"no exported model in the folder {path}: expected {folder_form}"
    prefix = export_prefix_of(path)
    if prefix is None and not any(os.path.isfile(path + e) for e in EXPORT_SUFFIXES):
        # nothing there at all: the folder tools/export.py would have written, or a path prefix
        return (f"no exported model at {path}: expected {folder_form} (the folder tools/export.py writes), "
                f"or {path}.json and {path}.pdiparams (a path prefix)")
    prefix = path if prefix is None else prefix
    return f"no exported model at {prefix}: expected {prefix}.json (or .pdmodel) and {prefix}.pdiparams"


def resolve_prefix(path):
    """Accept a prefix, any of its files (``.json``, ``.meta.json``, ``.pdmodel``, ``.pdiparams``) or a
    folder holding exactly one exported model; return the prefix. A folder without any raises
    ``MissingExportError`` (``missing_export_message``), one with several ``FileNotFoundError``."""
    path = os.fspath(path)
    if os.path.isdir(path):
        prefixes = sorted(f[: -len(".pdiparams")] for f in os.listdir(path) if f.endswith(".pdiparams"))
        if not prefixes:
            raise MissingExportError(missing_export_message(path))
        if len(prefixes) != 1:
            raise FileNotFoundError(
                f"{path} holds {len(prefixes)} exported models ({prefixes}); give the path prefix of one"
            )
        return os.path.join(path, prefixes[0])
    prefix = export_prefix_of(path)
    return prefix if prefix is not None and os.path.isfile(path) else path




class Predictor:
    """An exported model: ``predictor(batch)`` maps an NCHW float32 array to float32 logits.

    Args:
        model_prefix: the ``out_prefix`` given to ``export_model`` (or one of its files, or its folder).
        device: "auto" (GPU when Paddle has one), "cpu", "gpu" or "gpu:N".
        threads: CPU math threads; None for ``OMP_NUM_THREADS`` or else every available core.
        batch_size: largest batch sent to the engine at once; bigger inputs are run in chunks.
        backend: "auto" (the fastest verified at export; ``paddle`` on a GPU), or one of "paddle",
            "paddle_bf16", "onnxruntime". Raises ``BackendError`` for a backend export did not verify.
        onednn: ``paddle`` backend on CPU: use oneDNN kernels (much faster here; off only for comparison).
        ir_optim: ``paddle`` backends: let Paddle Inference fuse/optimise the graph.

    ``backend_name`` says what runs, ``backend_record`` what export measured for it (None if unverified).
    """

    def __init__(self, model_prefix, device="auto", threads=None, batch_size=64, backend=AUTO, onednn=True,
                 ir_optim=True):
        from .backends import OnnxRuntimeBackend, PaddleBackend

        self.prefix = resolve_prefix(model_prefix)
        given = os.fspath(model_prefix)
        self.meta = read_meta(self.prefix)
        folder = os.path.dirname(self.prefix)
        files = dict((self.meta or {}).get("files") or {})
        if not files.get("program"):
            files["program"] = next((os.path.basename(self.prefix) + e for e in (".json", ".pdmodel")
                                     if os.path.isfile(self.prefix + e)), None)
        files.setdefault("params", os.path.basename(self.prefix) + ".pdiparams")
        if not files["program"] or not all(os.path.isfile(os.path.join(folder, files[k]))
                                           for k in ("program", "params")):
            # name the files for the path as given (a missing folder and a prefix look alike)
            raise MissingExportError(missing_export_message(given if given == self.prefix else self.prefix))
        if self.meta is None:
            logger.warning("%s has no %s: raw arrays only, no image preprocessing or labels",
                           self.prefix, ".meta.json")
        self.batch_size = int(batch_size)
        self.device, device_id = resolve_device(device)
        self.threads = int(threads) if threads else default_threads()
        self._folder, self._files = folder, files
        self.backend_name = self._choose(str(backend or AUTO).lower())
        self.backend_record = ((self.meta or {}).get("backends") or {}).get(self.backend_name)
        if self.backend_name == PADDLE:
            self._engine = PaddleBackend(os.path.join(folder, files["program"]), os.path.join(folder, files["params"]),
                                         self.device, device_id, self.threads, onednn=onednn, ir_optim=ir_optim,
                                         label=self.prefix)
        elif self.backend_name == ONNXRUNTIME:
            self._engine = OnnxRuntimeBackend(os.path.join(folder, files["onnx"]), self.threads, label=self.prefix)
        else:
            self._engine = open_backend(self.backend_name, folder, files, "cpu", self.threads, label=self.prefix)

    # backend choice ------------------------------------------------------------------------------------
    def _choose(self, backend):
        if backend != AUTO and backend not in BACKENDS:
            raise BackendError(f"unknown backend {backend!r}; choose 'auto' or one of {list(BACKENDS)}")
        records = (self.meta or {}).get("backends")
        if self.device == "gpu":
            if backend not in (AUTO, PADDLE):
                raise BackendError(f"backend {backend!r} runs on CPU only; on the GPU use 'paddle' or 'auto', "
                                   "or pass device='cpu'")
            backend = PADDLE  # the program itself, fp32, on CUDA: as verified on CPU
        if not records:  # a program without verification records: the program itself, fp32
            if backend not in (AUTO, PADDLE):
                raise BackendError(f"backend {backend!r} was not verified for {self.prefix} (its export has no "
                                   "verification records); re-export it with ppvit.deploy.export_model / "
                                   "tools/export.py, or use backend='paddle'")
            problem = self._changed_files(PADDLE) if self.meta else None
            if problem:
                raise BackendError(f"{self.prefix} cannot be served: {problem}")
            return PADDLE
        verified = sorted((n for n, r in records.items() if r.get("verified")),
                          key=lambda n: -float(records[n].get("images_per_s") or 0.0))
        if backend != AUTO:
            rec = records.get(backend)
            if not rec or not rec.get("verified"):
                why = rec["reason"] if rec else "it was not checked at export"
                raise BackendError(f"backend {backend!r} is not offered for {self.prefix}: {why}; verified: "
                                   f"{verified or 'none'} (use backend='auto' for the fastest of them)")
            problem = self._changed_files(backend)
            if problem:
                raise BackendError(f"backend {backend!r} of {self.prefix} cannot be served: {problem}")
            return backend
        chosen = self.meta.get("backend")
        order = ([chosen] if chosen in verified else []) + [n for n in verified if n != chosen]
        for name in order:
            problem = self._changed_files(name)
            if not problem:
                return name
            logger.warning("%s: backend %s skipped: %s", self.prefix, name, problem)
        raise BackendError(f"no verified backend of {self.prefix} can be served (verified at export: "
                           f"{verified or 'none'}); re-export it with tools/export.py")

    def _changed_files(self, name):
        """Why ``name``'s files are not the ones export verified (None when they are). A file whose size, mtime
        and ctime are the ones export recorded is not read; another is hashed and compared with its sha256."""
        digests = (self.meta or {}).get("sha256") or {}
        stats = (self.meta or {}).get("file_stats") or {}
        needed = [self._files.get("onnx")] if name == ONNXRUNTIME else [self._files["program"], self._files["params"]]
        for f in needed:
            path = os.path.join(self._folder, f) if f else None
            if not path or not os.path.isfile(path):
                return f"{f or 'its model file'} is missing"
            if f in digests and stats.get(f) != file_stat(path) and sha256_file(path) != digests[f]:
                return f"{f} changed after it was verified at export (sha256 differs); re-export the model"
        return None

    @property
    def backend_label(self):
        """What runs, for people: "Paddle Inference fp32 (oneDNN)", "ONNX Runtime fp32", ..."""
        from .backends import LABELS

        label = LABELS[self.backend_name]
        return label + (" (oneDNN)" if self.onednn else " (GPU)" if self.device == "gpu" else "")

    @property
    def onednn(self):
        """Whether oneDNN kernels run (Paddle Inference backends on CPU)."""
        return bool(getattr(self._engine, "onednn", False))

    @property
    def input_shape(self):
        """(C, H, W) the model was exported for, when known."""
        shape = (self.meta or {}).get("input", {}).get("shape")
        return tuple(shape[1:]) if shape else None

    @property
    def labels(self):
        return (self.meta or {}).get("labels")

    def _check(self, x):
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[None]
        if x.ndim != 4:
            raise ValueError(f"expected an NCHW batch, got an array of shape {x.shape}")
        if self.input_shape and tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"the exported model takes inputs of shape [N, {', '.join(map(str, self.input_shape))}], "
                f"got {list(x.shape)}"
            )
        return np.ascontiguousarray(x, dtype=np.float32)

    def _run(self, chunk):
        return self._engine(chunk)

    def __call__(self, x):
        """Logits for an NCHW float32 batch (a single CHW image is taken as a batch of one)."""
        x = self._check(x)
        if len(x) <= self.batch_size:
            return self._run(x)
        return np.concatenate([self._run(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)])

    @property
    def temperature(self):
        """The softmax temperature the export records (``ppvit eval -o Eval.calibrate=true``), or None."""
        return (self.meta or {}).get("temperature")

    def predict_proba(self, x, temperature=None):
        """Probabilities [N, classes]: ``softmax(logits / temperature)``; None = plain ``softmax(logits)``."""
        logits = self(x)
        return softmax(logits if temperature is None else np.asarray(logits, np.float64) / float(temperature))

    # images -----------------------------------------------------------------------------------------
    def preprocess(self, image, color="BGR"):
        """One HWC uint8 image (as read by cv2: BGR, unless ``color="RGB"``) -> CHW float32 model input."""
        if not self.meta:
            raise ValueError(f"{self.prefix} has no .meta.json, so its image preprocessing is unknown")
        return preprocess_image(image, self.meta["preprocess"], color=color)


_CV2_INTERPOLATION = {"nearest": "INTER_NEAREST", "bilinear": "INTER_LINEAR", "bicubic": "INTER_CUBIC",
                      "area": "INTER_AREA", "lanczos": "INTER_LANCZOS4"}


def preprocess_image(image, preprocess, color="BGR"):
    """Apply the exported preprocessing to one HWC uint8 image -> CHW float32.

    With ``ops`` (a run's resolved eval pipeline, recorded at export) and its ``backend``: exactly those ops
    (``ppvit.data.transforms.apply_eval_ops``). Without (exports of bare models): channel order, resize (cv2),
    optional centre crop, then ``(pixel * scale - mean) / std`` per channel.
    """
    import cv2

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HWC image with 3 channels, got shape {image.shape}")
    if preprocess.get("ops"):  # the run's eval pipeline, recorded as data: applied as evaluation applied it
        from ..data.transforms import apply_eval_ops

        rgb = image if color == "RGB" else image[:, :, ::-1]
        return apply_eval_ops(np.ascontiguousarray(rgb, dtype=np.uint8), preprocess["ops"], preprocess["backend"])
    if color != preprocess["channel_order"]:
        image = image[:, :, ::-1]
    interp = getattr(cv2, _CV2_INTERPOLATION[preprocess.get("interpolation", "bilinear")])
    resize = preprocess["resize"]
    if isinstance(resize, int):  # short side to `resize`, keeping the aspect ratio
        h, w = image.shape[:2]
        s = resize / min(h, w)
        resize = [max(1, round(h * s)), max(1, round(w * s))]
    if list(image.shape[:2]) != list(resize):
        image = cv2.resize(np.ascontiguousarray(image), (resize[1], resize[0]), interpolation=interp)
    crop = preprocess.get("crop")
    if crop:
        top, left = (image.shape[0] - crop[0]) // 2, (image.shape[1] - crop[1]) // 2
        image = image[top:top + crop[0], left:left + crop[1]]
    x = image.astype(np.float32) * np.float32(preprocess["scale"])
    x = (x - np.asarray(preprocess["mean"], np.float32)) / np.asarray(preprocess["std"], np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))  # HWC -> CHW


def expand_image_paths(paths):
    """Files as given (any extension: a non-image is an error later), folders expanded to their image
    files (sorted, recursively). Raises ``ImageReadError`` for a path that is neither (``<path>: no such file
    or folder``: it may have meant either) and for a folder without images."""
    import glob

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in map(os.fspath, paths):
        if not os.path.exists(p):
            hint = " (a pattern such as *.jpg is not expanded: give its folder)" if glob.has_magic(p) else ""
            raise ImageReadError(f"{p}: no such file or folder{hint}")
        if os.path.isdir(p):
            # links to files and folders followed, loops walked once (the training folders' rule)
            found = [f for f in walk_files(p) if f.lower().endswith(IMAGE_EXTENSIONS)]
            if not found:
                raise ImageReadError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {p}")
            out += sorted(found)
        else:
            out.append(p)
    return out


def topk_entries(probs, k, labels=None, raw=None):
    """[{class_id, label, score}] for the k highest of a 1-D probability vector, best first; with ``raw`` (the
    uncalibrated probabilities of the same classes) each entry also has ``raw_score``."""
    k = min(int(k), len(probs))
    ids = np.argsort(-probs, kind="stable")[:k]
    entries = [{"class_id": int(i), "label": labels[i] if labels else str(int(i)), "score": float(probs[i])}
               for i in ids]
    if raw is not None:
        for e in entries:
            e["raw_score"] = float(raw[e["class_id"]])
    return entries


def classify_files(predictor, paths, topk=5, temperature=None):
    """Classify image files and/or folders of images with an exported model.

    Returns one dict per image, in input order: ``{"path", "topk": [{"class_id", "label", "score"}]}``
    with softmax scores. With ``temperature`` T (temperature scaling, e.g. the export's
    ``meta["temperature"]``) the scores are ``softmax(logits / T)`` and each entry also has ``raw_score``
    (``softmax(logits)``); the classes and their order are the same. A path that is not a readable image
    raises ``ImageReadError`` naming it.
    """
    files = expand_image_paths(paths)
    results = []
    # load a chunk at a time, so a folder of thousands of images does not sit in memory at once
    for start in range(0, len(files), predictor.batch_size):
        chunk = files[start:start + predictor.batch_size]
        batch = np.stack([predictor.preprocess(read_image(f)) for f in chunk])
        if temperature is None:
            probs, raws = predictor.predict_proba(batch), [None] * len(chunk)
        else:
            logits = np.asarray(predictor(batch), dtype=np.float64)
            probs, raws = softmax(logits / float(temperature)), softmax(logits)  # one forward pass for both
        results += [{"path": f, "topk": topk_entries(p, topk, predictor.labels, r)}
                    for f, p, r in zip(chunk, probs, raws)]
    return results


def format_result(result):
    """One line per image: ``path: label (0.912), label (0.051), ...``; with calibrated scores also the raw
    ones: ``label (0.912, raw 0.990)``."""
    tops = ", ".join(f"{t['label']} ({t['score']:.3f}" + (f", raw {t['raw_score']:.3f})" if "raw_score" in t else ")")
                     for t in result["topk"])
    return f"{result['path']}: {tops}"
