"""Export a model for deployment: a Paddle inference program (``paddle.jit.save``), a small JSON of
preprocessing and class labels beside it, and ONNX where paddle2onnx is installed.

Files written for ``out_prefix``:

- ``<prefix>.json`` + ``<prefix>.pdiparams``: the inference program and weights. Paddle 3 (PIR) names its
  program ``<prefix>.json``, so ppvit's own metadata cannot take that name; it is
  ``<prefix>.meta.json``.
- ``<prefix>.meta.json``: input shape, preprocessing, labels. Written last, so its presence means the
  export is complete.
- ``<prefix>.onnx``: only when paddle2onnx is importable.
"""
import json
import logging
import os
import shutil
import tempfile

import paddle

from ..constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from ..io import write_json

logger = logging.getLogger("ppvit")

META_SUFFIX = ".meta.json"
META_FORMAT = "ppvit.inference"
META_VERSION = 1
INPUT_NAME = "x"

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "lanczos")

# What the notebooks' eval transforms do: cv2 backend (RGB arrays from the CIFAR loader), Resize((H, W)),
# ToTensor (/255), Normalize(ImageNet mean/std).
PREPROCESS_KEYS = ("resize", "crop", "interpolation", "channel_order", "scale", "mean", "std")


def _hw(size):
    if isinstance(size, int):
        return [size, size]
    size = [int(s) for s in size]
    if len(size) != 2:
        raise ValueError(f"image size must be an int or (height, width), got {size}")
    return size


def default_preprocess(input_size):
    """The notebooks' evaluation preprocessing at ``input_size``: resize to it, /255, ImageNet mean/std."""
    return {
        "resize": _hw(input_size),  # [H, W]: squash to this size; an int: resize the short side to it
        "crop": None,  # [H, W] centre crop after the resize, or None
        "interpolation": "bilinear",
        "channel_order": "RGB",  # channel order the model was trained on (cv2 reads BGR)
        "scale": 1.0 / 255.0,  # pixels are multiplied by this before (x - mean) / std
        "mean": list(IMAGENET_DEFAULT_MEAN),
        "std": list(IMAGENET_DEFAULT_STD),
    }


def make_preprocess(input_size, overrides=None):
    """``default_preprocess`` updated by ``overrides``, checked for unknown keys and consistent sizes."""
    pp = default_preprocess(input_size)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(PREPROCESS_KEYS))
    if unknown:
        raise ValueError(f"unknown preprocess keys {unknown}; known: {list(PREPROCESS_KEYS)}")
    pp.update(overrides)
    if pp["channel_order"] not in ("RGB", "BGR"):
        raise ValueError(f"preprocess channel_order must be 'RGB' or 'BGR', got {pp['channel_order']!r}")
    if pp["interpolation"] not in INTERPOLATIONS:
        raise ValueError(f"preprocess interpolation must be one of {INTERPOLATIONS}, got {pp['interpolation']!r}")
    for key in ("mean", "std"):
        pp[key] = [float(v) for v in pp[key]]
        if len(pp[key]) != 3:
            raise ValueError(f"preprocess {key} needs 3 values (one per channel), got {pp[key]}")
    pp["scale"] = float(pp["scale"])
    pp["resize"] = pp["resize"] if isinstance(pp["resize"], int) else _hw(pp["resize"])
    pp["crop"] = None if pp["crop"] is None else _hw(pp["crop"])
    final = pp["crop"] or pp["resize"]
    if final != _hw(input_size):
        raise ValueError(
            f"preprocessing produces {final} images (resize {pp['resize']}, crop {pp['crop']}) but the model "
            f"is exported for {_hw(input_size)}"
        )
    return pp


def meta_path(prefix):
    return os.fspath(prefix) + META_SUFFIX


def _export_onnx(model, prefix, spec, opset_version):
    """ONNX through paddle2onnx when it is installed; returns the file name or None."""
    try:
        import paddle2onnx  # noqa: F401
    except ImportError:
        logger.info("paddle2onnx is not installed: skipping the ONNX export (pip install paddle2onnx)")
        return None
    try:
        paddle.onnx.export(model, prefix, input_spec=[spec], opset_version=opset_version)
    except Exception as e:  # optional output: a converter gap must not lose the Paddle export
        logger.warning("ONNX export failed, Paddle inference files are unaffected (%s: %s)", type(e).__name__, e)
        return None
    path = prefix + ".onnx"
    return os.path.basename(path) if os.path.isfile(path) else None


def export_model(model, out_prefix, input_size, meta=None, onnx=True, opset_version=13):
    """Save ``model`` (eval mode) for Paddle Inference with an input of shape [None, 3, H, W].

    Args:
        model: a ``paddle.nn.Layer`` returning logits.
        out_prefix: path prefix, e.g. ``output/conv2former/inference``.
        input_size: int or (H, W) of the exported input.
        meta: optional dict. ``labels`` (class names), ``model`` (its registered name), ``preprocess``
            (overrides of ``default_preprocess``: resize, crop, interpolation, channel_order, scale,
            mean, std); any other key is stored in the JSON as given (must be JSON-serialisable).
        onnx: also write ``<prefix>.onnx`` when paddle2onnx is installed.

    Returns the metadata dict written to ``<prefix>.meta.json``; its ``files`` entry holds the paths.
    """
    out_prefix = os.fspath(out_prefix)
    h, w = _hw(input_size)
    meta = dict(meta or {})
    preprocess = make_preprocess([h, w], meta.pop("preprocess", None))
    labels = meta.pop("labels", None)
    num_classes = getattr(model, "num_classes", None)
    if labels is not None:
        labels = [str(n) for n in labels]
        if num_classes is not None and len(labels) != num_classes:
            raise ValueError(f"{len(labels)} labels given for a model with {num_classes} classes")
        num_classes = len(labels)
    elif num_classes:
        labels = [str(i) for i in range(num_classes)]

    folder = os.path.dirname(os.path.abspath(out_prefix))
    os.makedirs(folder, exist_ok=True)
    base = os.path.basename(out_prefix)
    spec = paddle.static.InputSpec([None, 3, h, w], "float32", INPUT_NAME)
    was_training = model.training
    model.eval()
    # Save into a private temp folder, then move the files into place: a failed or killed export never
    # leaves a half-written program next to an older, valid one.
    tmp_dir = tempfile.mkdtemp(prefix="." + base + ".", dir=folder)
    try:
        paddle.jit.save(model, os.path.join(tmp_dir, base), input_spec=[spec])
        onnx_file = _export_onnx(model, os.path.join(tmp_dir, base), spec, opset_version) if onnx else None
        written = sorted(os.listdir(tmp_dir))
        for name in written:
            os.replace(os.path.join(tmp_dir, name), os.path.join(folder, name))
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        model.train(was_training)

    program = next((base + ext for ext in (".json", ".pdmodel") if base + ext in written), None)
    if program is None or base + ".pdiparams" not in written:
        raise RuntimeError(f"paddle.jit.save wrote {written}, expected {base}.json/.pdmodel and {base}.pdiparams "
                           "(a model without parameters has no .pdiparams and is not supported)")
    info = {
        "format": META_FORMAT,
        "format_version": META_VERSION,
        "model": meta.pop("model", None),
        "input": {"name": INPUT_NAME, "shape": [None, 3, h, w], "dtype": "float32", "layout": "NCHW"},
        "image_size": [h, w],
        "num_classes": num_classes,
        "labels": labels,
        "preprocess": preprocess,
        "files": {"program": program, "params": base + ".pdiparams", "onnx": onnx_file},
        "paddle_version": paddle.__version__,
    }
    info.update(meta)
    write_json(meta_path(out_prefix), info, indent=2)
    logger.info("exported %s (%s, %s%s)", out_prefix, program, base + ".pdiparams",
                f", {onnx_file}" if onnx_file else "")
    return info


def read_meta(prefix):
    """The ``<prefix>.meta.json`` written by ``export_model``, or None when there is none."""
    path = meta_path(prefix)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        try:
            info = json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e})") from None
    if info.get("format") != META_FORMAT:
        raise ValueError(f"{path} is not a ppvit inference metadata file (format {info.get('format')!r})")
    return info
