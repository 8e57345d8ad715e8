"""Run an exported model with Paddle Inference, and classify image files with it.

On CPU the predictor uses oneDNN and several math threads: for the models here that is many times
faster than Paddle's dygraph (see ``benchmarks/bench_predictor.py``). On a CUDA build with a visible
GPU, ``device="auto"`` runs on the GPU.
"""
import logging
import os

import numpy as np

from ..io.images import IMAGE_EXTENSIONS, ImageReadError, read_image  # noqa: F401  (re-exported by ppvit.deploy)
from ..utils.device import resolve_device
from ..utils.softmax import softmax  # noqa: F401  (re-exported by ppvit.deploy)
from .export import read_meta

logger = logging.getLogger("ppvit")



# Ops whose oneDNN kernels are unsafe in Paddle 3.3: the generic `pad` op (F.pad with a pad per dimension)
# corrupts the heap (glibc "malloc assertion failure", or a hang) instead of raising, so a program holding
# one runs on the plain CPU kernels. F.pad on the last two dims of NCHW (the pad3d op) is fine.
ONEDNN_UNSAFE_OPS = ("pad",)


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_threads():
    """``OMP_NUM_THREADS`` when the user set it, else every core this process may use."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    return int(env) if env.isdigit() and int(env) > 0 else cpu_count()


def resolve_prefix(path):
    """Accept a prefix, any of its files (``.json``, ``.meta.json``, ``.pdmodel``, ``.pdiparams``) or a
    folder holding exactly one exported model; return the prefix."""
    path = os.fspath(path)
    if os.path.isdir(path):
        prefixes = sorted(f[: -len(".pdiparams")] for f in os.listdir(path) if f.endswith(".pdiparams"))
        if len(prefixes) != 1:
            raise FileNotFoundError(
                f"{path} holds {len(prefixes)} exported models ({prefixes}); give the path prefix of one"
            )
        return os.path.join(path, prefixes[0])
    for ext in (".meta.json", ".json", ".pdmodel", ".pdiparams"):
        if path.endswith(ext) and os.path.isfile(path):
            return path[: -len(ext)]
    return path


def program_ops(program_file):
    """Names of the ops in a PIR ``.json`` program (op nodes carry ``"#": "<dialect>.<name>"``); an empty
    set for other formats."""
    import json

    if not program_file.endswith(".json"):
        return set()
    with open(program_file, encoding="utf-8") as f:
        tree = json.load(f)
    ops, stack = set(), [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            tag = node.get("#")
            if isinstance(tag, str) and "O" in node:  # an operation (it lists its outputs)
                ops.add(tag.split(".", 1)[-1])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return ops


class Predictor:
    """An exported model under Paddle Inference: ``predictor(batch)`` maps an NCHW float32 array to logits.

    Args:
        model_prefix: the ``out_prefix`` given to ``export_model`` (or one of its files, or its folder).
        device: "auto" (GPU when Paddle has one), "cpu", "gpu" or "gpu:N".
        threads: CPU math threads; None for ``OMP_NUM_THREADS`` or else every available core.
        batch_size: largest batch sent to the engine at once; bigger inputs are run in chunks.
        onednn: use oneDNN kernels on CPU (much faster for these models; off only for comparison).
        ir_optim: let Paddle Inference fuse/optimise the graph.
    """

    def __init__(self, model_prefix, device="auto", threads=None, batch_size=64, onednn=True, ir_optim=True):
        self.prefix = resolve_prefix(model_prefix)
        self.meta = read_meta(self.prefix)
        files = (self.meta or {}).get("files") or {}
        folder = os.path.dirname(self.prefix)
        program = os.path.join(folder, files["program"]) if files.get("program") else None
        if program is None:
            program = next((self.prefix + e for e in (".json", ".pdmodel") if os.path.isfile(self.prefix + e)), None)
        params = os.path.join(folder, files.get("params") or os.path.basename(self.prefix) + ".pdiparams")
        if program is None or not os.path.isfile(program) or not os.path.isfile(params):
            raise FileNotFoundError(
                f"no exported model at {self.prefix}: expected {self.prefix}.json (or .pdmodel) and "
                f"{self.prefix}.pdiparams, as written by ppvit.deploy.export_model / tools/export.py"
            )
        if self.meta is None:
            logger.warning("%s has no %s: raw arrays only, no image preprocessing or labels",
                           self.prefix, ".meta.json")
        self.batch_size = int(batch_size)
        self.device, device_id = resolve_device(device)
        self.threads = int(threads) if threads else default_threads()

        self._files = (program, params)
        self.onednn = bool(onednn) and self.device == "cpu"
        unsafe = sorted(program_ops(program) & set(ONEDNN_UNSAFE_OPS)) if self.onednn else []
        if unsafe:
            logger.warning("%s uses %s, whose oneDNN kernel is broken in this Paddle; running it on the plain "
                           "CPU kernels (slower)", self.prefix, ", ".join(unsafe))
            self.onednn = False
        self._ir_optim = ir_optim
        self._device_id = device_id
        self._build()

    def _build(self):
        from paddle import inference

        config = inference.Config(*self._files)
        if self.device == "gpu":
            config.enable_use_gpu(256, self._device_id)
        else:
            config.disable_gpu()
            config.set_cpu_math_library_num_threads(self.threads)
            if self.onednn:
                config.enable_onednn()
                # oneDNN caches kernels per input shape; chunking makes at most a few shapes.
                config.set_onednn_cache_capacity(8)
            else:
                config.disable_onednn()  # Paddle 3 turns it on by default on CPU
        config.switch_ir_optim(self._ir_optim)
        config.disable_glog_info()
        self._predictor = inference.create_predictor(config)
        self._input = self._predictor.get_input_handle(self._predictor.get_input_names()[0])
        self._output = self._predictor.get_output_handle(self._predictor.get_output_names()[0])

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
        self._input.reshape(list(chunk.shape))
        self._input.copy_from_cpu(chunk)
        try:
            self._predictor.run()
        except RuntimeError as e:
            if not self.onednn:
                raise
            # Some fused oneDNN kernels reject shapes the plain CPU kernels take (Paddle 3.3: a matmul of a
            # 4-D input with a transposed weight); stay correct, slower, rather than fail.
            logger.warning("oneDNN failed on %s (%s); falling back to Paddle's plain CPU kernels",
                           self.prefix, e)
            self.onednn = False
            self._build()
            return self._run(chunk)
        return self._output.copy_to_cpu()

    def __call__(self, x):
        """Logits for an NCHW float32 batch (a single CHW image is taken as a batch of one)."""
        x = self._check(x)
        if len(x) <= self.batch_size:
            return self._run(x)
        return np.concatenate([self._run(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)])

    def predict_proba(self, x):
        return softmax(self(x))

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

    Order as in the notebooks' eval transforms: channel order, resize (cv2), optional centre crop,
    then ``(pixel * scale - mean) / std`` per channel.
    """
    import cv2

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HWC image with 3 channels, got shape {image.shape}")
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
    files (sorted, recursively)."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out = []
    for p in map(os.fspath, paths):
        if os.path.isdir(p):
            found = []
            for root, _, files in os.walk(p):
                found += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_EXTENSIONS)]
            if not found:
                raise ImageReadError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) in folder {p}")
            out += sorted(found)
        else:
            out.append(p)
    return out


def topk_entries(probs, k, labels=None):
    """[{class_id, label, score}] for the k highest of a 1-D probability vector, best first."""
    k = min(int(k), len(probs))
    ids = np.argsort(-probs, kind="stable")[:k]
    return [{"class_id": int(i), "label": labels[i] if labels else str(int(i)), "score": float(probs[i])}
            for i in ids]


def classify_files(predictor, paths, topk=5):
    """Classify image files and/or folders of images with an exported model.

    Returns one dict per image, in input order: ``{"path", "topk": [{"class_id", "label", "score"}]}``
    with softmax scores. A path that is not a readable image raises ``ImageReadError`` naming it.
    """
    files = expand_image_paths(paths)
    results = []
    # load a chunk at a time, so a folder of thousands of images does not sit in memory at once
    for start in range(0, len(files), predictor.batch_size):
        chunk = files[start:start + predictor.batch_size]
        batch = np.stack([predictor.preprocess(read_image(f)) for f in chunk])
        probs = predictor.predict_proba(batch)
        results += [{"path": f, "topk": topk_entries(p, topk, predictor.labels)} for f, p in zip(chunk, probs)]
    return results


def format_result(result):
    """One line per image: ``path: label (0.912), label (0.051), ...``."""
    tops = ", ".join(f"{t['label']} ({t['score']:.3f})" for t in result["topk"])
    return f"{result['path']}: {tops}"
