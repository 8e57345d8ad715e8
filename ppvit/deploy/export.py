"""Export a model for deployment: a Paddle inference program (``paddle.jit.save``), an ONNX model, each
inference backend verified against the dygraph model and timed, and a JSON of all that beside them.

Files written for ``out_prefix``:

- ``<prefix>.json`` + ``<prefix>.pdiparams``: the inference program and weights. Paddle 3 (PIR) names its
  program ``<prefix>.json``, so ppvit's own metadata cannot take that name; it is ``<prefix>.meta.json``.
- ``<prefix>.onnx``: the same program converted offline by paddle2onnx (see ``onnx_export``).
- ``<prefix>.meta.json``: input shape, preprocessing, labels, and per backend whether it was verified, how
  far it is from the dygraph model and how fast it ran; ``backend`` names the fastest verified one, which
  ``Predictor(backend="auto")`` runs; each file's sha256, hashed once here, and its size and times
  (``file_stats``). Written last, so its presence means the export is complete.

Verification: every backend (``backends.BACKENDS``) runs a fixed batch (seeded uniform pixels through the
exported normalisation, plus the caller's ``check_images``) and is compared with the dygraph model:

- fp32 (``paddle``, ``onnxruntime``): ``max|logit - ref| / max(1, max|ref|) <= 1e-4``, i.e. absolute for
  logits of order 1 and relative for larger ones, since float32 reductions summed in another order
  differ in proportion to the magnitude of what they sum (a correct engine gives ~1e-6 here).
- bf16 (``paddle_bf16``): bf16 keeps 8 mantissa bits (rounding error 2**-9 = 0.2% per value), so logits
  move by a few tenths of a percent of their scale through a network; accepted when
  ``max|logit - ref| / max(1, max|ref|) <= 0.05`` and the softmax probabilities differ by at most 0.02, and
  the predicted class agrees wherever the reference's top-2 gap exceeds twice that logit error.
- all: finite outputs, and top-1 agreement with dygraph >= 99.5% on ``check_images`` when given.

A backend that fails is not offered (``verified: false`` with the reason) and a one-line warning says why.
"""
import json
import logging
import os
import shutil
import tempfile

import numpy as np
import paddle

from ..constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from ..io import write_json
from ..utils.softmax import softmax
# one file digest and one record of source weights for the package (sha256_file: the predictor checks digests)
from ..io.provenance import sha256_file  # noqa: F401
from ..io.provenance import weights_record as source_weights_record
from ..utils.quiet import PADDLE_EXPORT_NOTICES, drop_stderr_lines, paddle_error_summary
from .rewrites import for_export

logger = logging.getLogger("ppvit")

META_SUFFIX = ".meta.json"
META_FORMAT = "ppvit.inference"
META_VERSION = 1
INPUT_NAME = "x"

INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "area", "lanczos")

# What the notebooks' eval transforms do: cv2 backend (RGB arrays from the CIFAR loader), Resize((H, W)),
# ToTensor (/255), Normalize(ImageNet mean/std).
PREPROCESS_KEYS = ("resize", "crop", "interpolation", "channel_order", "scale", "mean", "std", "backend", "ops")


def _hw(size):
    if isinstance(size, int):
        return [size, size]
    size = [int(s) for s in size]
    if len(size) != 2:
        raise ValueError(f"image size must be an int or (height, width), got {size}")
    return size


def default_preprocess(input_size, model_cfg=None):
    """The evaluation preprocessing at ``input_size`` when no data config gives one.

    With a model ``pretrained_cfg`` holding ``crop_pct`` (``model_cfg``, a dict; every ``ppvit.create_model``
    model): timm's eval transform as ``ops`` on PIL images (shorter side to ``floor(size / crop_pct)`` with the
    cfg's interpolation, centre crop, /255, the cfg's mean/std), which the predictor applies as evaluation does
    (``ppvit.data.transforms.apply_eval_ops``). Without one (a bare ``paddle.nn.Layer``): the notebooks' squash,
    resize to ``input_size`` (cv2), /255, ImageNet's mean/std."""
    model_cfg = model_cfg or {}
    interpolation = model_cfg.get("interpolation", "bilinear")
    pp = {
        "resize": _hw(input_size),  # [H, W]: squash to this size; an int: resize the short side to it
        "crop": None,  # [H, W] centre crop after the resize, or None
        "interpolation": interpolation if interpolation in INTERPOLATIONS else "bilinear",
        "channel_order": "RGB",  # channel order the model was trained on (cv2 reads BGR)
        "scale": 1.0 / 255.0,  # pixels are multiplied by this before (x - mean) / std
        "mean": list(model_cfg.get("mean", IMAGENET_DEFAULT_MEAN)),
        "std": list(model_cfg.get("std", IMAGENET_DEFAULT_STD)),
    }
    h, w = _hw(input_size)
    if model_cfg.get("crop_pct") and h == w:
        short = int(h / float(model_cfg["crop_pct"]) // 1)  # floor, as timm
        pp.update(resize=short, crop=[h, w], backend="pil", ops=[
            {"TimmResizeShorter": {"size": short, "interpolation": pp["interpolation"]}},
            {"TimmCenterCrop": {"size": h}}, {"TimmNormalize": {"mean": pp["mean"], "std": pp["std"]}}])
    return pp


def make_preprocess(input_size, overrides=None, model_cfg=None):
    """``default_preprocess`` updated by ``overrides``, checked for unknown keys and consistent sizes."""
    pp = default_preprocess(input_size, model_cfg)
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(PREPROCESS_KEYS))
    if unknown:
        raise ValueError(f"unknown preprocess keys {unknown}; known: {list(PREPROCESS_KEYS)}")
    if "ops" not in overrides and set(overrides) & {"resize", "crop", "interpolation", "scale", "mean", "std"}:
        pp.pop("ops", None), pp.pop("backend", None)  # described by the summary keys alone (cv2 path)
    pp.update(overrides)
    if pp.get("ops") is not None and pp.get("backend") not in ("cv2", "pil"):
        raise ValueError(f"preprocess ops need their image backend 'cv2' or 'pil', got {pp.get('backend')!r}")
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


def file_stat(path):
    """``{"size", "mtime_ns", "ctime_ns"}`` of a file: what ``Predictor`` compares to tell, without reading it,
    that a file is the one export hashed (any write, and a restored mtime too, changes the ctime)."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def meta_path(prefix):
    return os.fspath(prefix) + META_SUFFIX


FP32_TOLERANCE = 1e-4
BF16_TOLERANCE = 0.05
BF16_PROB_TOLERANCE = 0.02
MIN_TOP1_AGREEMENT = 0.995
VERIFY_BATCH = 8


def _export_onnx(prefix, program, params, opset_version):
    """``<prefix>.onnx`` from the saved program; returns its file name, or None (with the reason logged)."""
    from .onnx_export import OnnxExportError, convert

    try:
        model = convert(program, params, opset_version)
    except ImportError as e:
        logger.warning("ONNX not exported: %s (pip install paddle2onnx onnx onnxruntime)", e)
        return None
    except OnnxExportError as e:  # a converter gap must not lose the Paddle export
        logger.warning("ONNX not exported, the Paddle inference files are unaffected: %s", e)
        return None
    import onnx

    onnx.save(model, prefix + ".onnx")
    return os.path.basename(prefix) + ".onnx"


def verification_batch(preprocess, h, w, n=VERIFY_BATCH, seed=0):
    """A fixed batch: seeded uniform pixels through the exported normalisation (what real inputs look like
    to the model: values in the range its first layer saw in training)."""
    rng = np.random.RandomState(seed)
    pixels = rng.randint(0, 256, size=(n, h, w, 3)).astype(np.float32)
    mean, std = np.asarray(preprocess["mean"], np.float32), np.asarray(preprocess["std"], np.float32)
    x = (pixels * np.float32(preprocess["scale"]) - mean) / std
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # N, 3, H, W


def _in_chunks(fn, x, batch):
    return np.concatenate([np.asarray(fn(x[i:i + batch]), np.float32) for i in range(0, len(x), batch)])


def _dygraph_logits(model, x, batch):
    def run(chunk):
        with paddle.no_grad():
            out = model(paddle.to_tensor(chunk))
        return (out[0] if isinstance(out, (list, tuple)) else out).numpy()

    return _in_chunks(run, x, batch)


def compare(name, out, ref, check_out=None, check_ref=None):
    """How far a backend's logits are from dygraph's, and whether that is within its tolerance.

    Returns ``{"verified", "max_abs_diff", "rel_diff", "max_prob_diff", "top1_agreement", "reason"}``
    (``top1_agreement`` on ``check_*`` when given, else on the fixed batch).
    """
    from .backends import REDUCED_PRECISION

    rec = {"verified": False, "reason": None}
    if out.shape != ref.shape:
        rec["reason"] = f"output shape {list(out.shape)} differs from dygraph's {list(ref.shape)}"
        return rec
    if not np.isfinite(out).all() or (check_out is not None and not np.isfinite(check_out).all()):
        rec["reason"] = "non-finite outputs (NaN/inf) where dygraph's are finite"
        return rec
    diff = float(np.abs(out - ref).max())
    scale = max(1.0, float(np.abs(ref).max()))
    rel = diff / scale
    prob = float(np.abs(softmax(out.astype(np.float64)) - softmax(ref.astype(np.float64))).max())
    if check_out is not None:
        top1 = float((check_out.argmax(-1) == check_ref.argmax(-1)).mean())
    else:
        top1 = float((out.argmax(-1) == ref.argmax(-1)).mean())
    rec.update(max_abs_diff=diff, rel_diff=rel, max_prob_diff=prob, top1_agreement=top1)
    if name in REDUCED_PRECISION:
        if rel > BF16_TOLERANCE:
            rec["reason"] = f"logits differ from dygraph by {rel:.2g} of their scale (> {BF16_TOLERANCE} for bf16)"
        elif prob > BF16_PROB_TOLERANCE:
            rec["reason"] = f"probabilities differ from dygraph by up to {prob:.3f} (> {BF16_PROB_TOLERANCE} for bf16)"
        else:
            # where the reference's top-2 gap is well above the error, the class must not change
            top2 = np.sort(ref, axis=-1)[:, -2:]
            decisive = (top2[:, 1] - top2[:, 0]) > 2 * diff
            if (out.argmax(-1) != ref.argmax(-1))[decisive].any():
                rec["reason"] = "predicted class differs from dygraph on an input with a clear margin"
    elif rel > FP32_TOLERANCE:
        rec["reason"] = (f"logits differ from dygraph by {diff:.2e} (max abs; {rel:.2e} of max(1, max|logit|)) "
                         f"> {FP32_TOLERANCE} for fp32")
    if rec["reason"] is None and check_out is not None and top1 < MIN_TOP1_AGREEMENT:
        rec["reason"] = f"top-1 agreement with dygraph {top1:.2%} on the check images (< {MIN_TOP1_AGREEMENT:.1%})"
    rec["verified"] = rec["reason"] is None
    return rec


def open_backend(name, folder, files, device="cpu", threads=None, label=None):
    """A backend (``backends.PaddleBackend`` / ``OnnxRuntimeBackend``) on an export's files."""
    from .backends import ONNXRUNTIME, PADDLE_BF16, OnnxRuntimeBackend, PaddleBackend

    if name == ONNXRUNTIME:
        if not files.get("onnx"):
            raise RuntimeError("no ONNX model was exported")
        return OnnxRuntimeBackend(os.path.join(folder, files["onnx"]), threads, label=label)
    device, device_id = device if isinstance(device, tuple) else (device, None)
    return PaddleBackend(os.path.join(folder, files["program"]), os.path.join(folder, files["params"]),
                         device, device_id, threads, bf16=name == PADDLE_BF16, label=label)


# Paddle's Intel OpenMP threads keep spinning for KMP_BLOCKTIME (200 ms) after a call; an engine timed right
# after one would share the cores with them. A pause when the engine changes lets them sleep first.
ENGINE_SWITCH_PAUSE_S = 0.25


def measure(backends, x, min_rounds=3, max_rounds=10, budget_s=4.0):
    """Images/s of each ``{name: fn}`` on batch ``x``: one warm-up call each (oneDNN builds its kernels for a
    new shape then), then rounds that call every backend once in turn, so a load change on a shared machine
    hits all alike; the median per backend. Rounds: as many as fit ``budget_s``, within the bounds."""
    import time

    def engine(name):
        return name.split("_")[0]  # paddle / paddle_bf16 share one runtime

    first = 0.0
    for fn in backends.values():
        t = time.perf_counter()
        fn(x)
        first += time.perf_counter() - t
    rounds = int(min(max_rounds, max(min_rounds, budget_s / max(first, 1e-9))))
    times = {name: [] for name in backends}
    previous = None
    for _ in range(rounds):
        for name, fn in backends.items():
            if previous is not None and engine(previous) != engine(name):
                time.sleep(ENGINE_SWITCH_PAUSE_S)
            t = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - t)
            previous = name
    return {name: len(x) / float(np.median(ts)) for name, ts in times.items()}


def verify_and_time(model, folder, files, preprocess, h, w, backends=None, check_images=None, bench_batch=None,
                    threads=None, label=None):
    """Run every backend on the fixed batch (and ``check_images``), compare with ``model`` (dygraph), time
    the verified ones at batch ``bench_batch``; returns ``(records, chosen)``."""
    from .backends import BACKENDS, PADDLE_BF16, bf16_support

    names = list(BACKENDS if backends is None else backends)
    bench_batch = int(bench_batch or (64 if h * w <= 64 * 64 else 16))
    x = verification_batch(preprocess, h, w)
    ref = _dygraph_logits(model, x, bench_batch)
    check = check_ref = None
    if check_images is not None:
        check = np.ascontiguousarray(np.asarray(check_images, np.float32))
        if check.ndim != 4 or tuple(check.shape[1:]) != (3, h, w):
            raise ValueError(f"check_images must be an NCHW float array of shape [N, 3, {h}, {w}], "
                             f"got {list(check.shape)}")
        check_ref = _dygraph_logits(model, check, bench_batch)
    records, runners = {}, {}
    for name in names:
        if name == PADDLE_BF16:
            ok, why = bf16_support()
            if not ok:
                records[name] = {"verified": False, "reason": why}
                logger.info("%s: backend %s not offered: %s", label, name, why)
                continue
        if name == "onnxruntime" and not files.get("onnx"):
            records[name] = {"verified": False, "reason": "no ONNX model (see the export log)"}
            logger.warning("%s: backend %s not offered: no ONNX model was exported", label, name)
            continue
        try:
            run = open_backend(name, folder, files, "cpu", threads, label=label)
            out = _in_chunks(run, x, bench_batch)
            check_out = _in_chunks(run, check, bench_batch) if check is not None else None
        except Exception as e:  # noqa: BLE001 - a backend that cannot run is not offered; the rest still are
            # Paddle's C++ errors are summarised: "(InvalidArgument) ... [Hint: ...] (at /paddle/...)" -> one clause
            records[name] = {"verified": False, "reason": f"failed to run ({paddle_error_summary(e)})"}
        else:
            records[name] = compare(name, out, ref, check_out, check_ref)
            if records[name]["verified"]:
                runners[name] = run
        if not records[name]["verified"]:
            logger.warning("%s: backend %s not offered: %s", label, name, records[name]["reason"])
    if runners:
        batch = np.ascontiguousarray(np.resize(x, (bench_batch,) + x.shape[1:]))
        for name, speed in measure(runners, batch).items():
            records[name]["images_per_s"] = round(speed, 1)
    chosen = max(runners, key=lambda n: records[n]["images_per_s"]) if runners else None
    return records, chosen


def _backend_names(backends, onnx):
    from .backends import BACKENDS, ONNXRUNTIME

    names = list(BACKENDS if backends is None else backends)
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backends {unknown}; known: {list(BACKENDS)}")
    return [n for n in names if onnx or n != ONNXRUNTIME]


def export_model(model, out_prefix, input_size=None, meta=None, onnx=True, opset_version=13, backends=None,
                 check_images=None, bench_batch_size=None, threads=None):
    """Save ``model`` (eval mode) for inference with an input of shape [None, 3, H, W], verify every backend
    against it and record the fastest verified one (see the module docstring).

    Args:
        model: a ``paddle.nn.Layer`` returning logits.
        out_prefix: path prefix, e.g. ``output/conv2former/inference``.
        input_size: int or (H, W) of the exported input; None takes it from ``model.pretrained_cfg``
            (set by ``ppvit.create_model``).
        meta: optional dict. ``labels`` (class names), ``model`` (its registered name), ``preprocess``
            (overrides of ``default_preprocess``, whose mean/std/interpolation come from the model's
            ``pretrained_cfg``: resize, crop, interpolation, channel_order, scale, mean, std; a trained run
            passes its data pipeline's own, which is what its weights saw), ``weights`` (the weights file it came from: its sha256 and mtime are recorded);
            ``temperature`` (a softmax temperature T > 0 from temperature scaling, or None: recorded as
            ``temperature``, for the predictor's users to compute ``softmax(logits / T)``; the program's logits
            stay raw);
            any other key is stored in the JSON as given (must be JSON-serialisable).
        onnx: also write ``<prefix>.onnx`` (paddle2onnx, offline) for the ONNX Runtime backend.
        backends: names to verify and offer (default: all of ``backends.BACKENDS``); ``[]`` skips
            verification (then only ``paddle`` fp32, the program itself, can be served).
        check_images: optional NCHW float32 batch of real (preprocessed) images, e.g. the run's eval
            images: each backend must agree with dygraph's top-1 on >= 99.5% of them.
        bench_batch_size: batch the backends are timed at (default 64 up to 64x64 inputs, else 16).
        threads: CPU threads of the backends (default ``OMP_NUM_THREADS`` or every core).

    Returns the metadata dict written to ``<prefix>.meta.json``; ``files`` holds the file names,
    ``backends`` the verification records and ``backend`` the one ``Predictor`` runs by default.
    Raises ``RuntimeError`` when no backend at all is verified (nothing would be safe to serve).
    """
    out_prefix = os.fspath(out_prefix)
    model_cfg = getattr(model, "pretrained_cfg", None) or {}
    if input_size is None:
        if "input_size" not in model_cfg:
            raise ValueError("input_size is required for a model without a pretrained_cfg (one not built by "
                             "ppvit.create_model)")
        input_size = tuple(model_cfg["input_size"][1:])
    h, w = _hw(input_size)
    meta = dict(meta or {})
    if model_cfg.get("architecture"):
        meta.setdefault("model", model_cfg["architecture"])
    preprocess = make_preprocess([h, w], meta.pop("preprocess", None), model_cfg)
    temperature = _temperature(meta.pop("temperature", None))  # checked before anything is written
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
    # Save and verify in a private temp folder, then move the files into place: a failed or killed export
    # never leaves a half-written program next to an older, valid one.
    tmp_dir = tempfile.mkdtemp(prefix="." + base + ".", dir=folder)
    try:
        tmp_prefix = os.path.join(tmp_dir, base)
        with drop_stderr_lines(*PADDLE_EXPORT_NOTICES):  # a glog warning printed on every export
            # a copy with the export rewrites (rewrites.py: the same maths in ops oneDNN runs fast); the
            # backends are verified against ``model`` itself
            paddle.jit.save(for_export(model), tmp_prefix, input_spec=[spec])
        written = sorted(os.listdir(tmp_dir))
        program = next((base + ext for ext in (".json", ".pdmodel") if base + ext in written), None)
        if program is None or base + ".pdiparams" not in written:
            raise RuntimeError(f"paddle.jit.save wrote {written}, expected {base}.json/.pdmodel and {base}.pdiparams "
                               "(a model without parameters has no .pdiparams and is not supported)")
        files = {"program": program, "params": base + ".pdiparams", "onnx": None}
        if onnx:
            files["onnx"] = _export_onnx(tmp_prefix, os.path.join(tmp_dir, program),
                                         os.path.join(tmp_dir, files["params"]), opset_version)
        names = _backend_names(backends, onnx)
        records, chosen = ({}, None) if not names else verify_and_time(
            model, tmp_dir, files, preprocess, h, w, names, check_images, bench_batch_size, threads, label=out_prefix)
        if names and chosen is None:
            raise RuntimeError(f"no inference backend reproduces the dygraph model for {out_prefix}: " + "; ".join(
                f"{n}: {r['reason']}" for n, r in records.items()))
        digests = {f: sha256_file(os.path.join(tmp_dir, f)) for f in files.values() if f}
        written = sorted(os.listdir(tmp_dir))
        for name in written:
            os.replace(os.path.join(tmp_dir, name), os.path.join(folder, name))
        stats = {f: file_stat(os.path.join(folder, f)) for f in digests}  # after the move, which sets ctime
        if not files["onnx"] and os.path.isfile(out_prefix + ".onnx"):
            os.remove(out_prefix + ".onnx")  # an older export's model must not sit beside this one
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        model.train(was_training)

    info = {
        "format": META_FORMAT,
        "format_version": META_VERSION,
        "model": meta.pop("model", None),
        "input": {"name": INPUT_NAME, "shape": [None, 3, h, w], "dtype": "float32", "layout": "NCHW"},
        "image_size": [h, w],
        "num_classes": num_classes,
        "labels": labels,
        "preprocess": preprocess,
        "files": files,
        "sha256": digests,
        "file_stats": stats,
        "backend": chosen,
        "backends": records,
        "verification": {
            "reference": "paddle dygraph fp32, eval mode",
            "inputs": f"{VERIFY_BATCH} seeded uniform-pixel images"
                      + (f" + {len(check_images)} check images" if check_images is not None else ""),
            "fp32_tolerance": FP32_TOLERANCE, "bf16_tolerance": BF16_TOLERANCE,
            "bf16_prob_tolerance": BF16_PROB_TOLERANCE, "min_top1_agreement": MIN_TOP1_AGREEMENT,
            "metric": "max|logit - ref| / max(1, max|ref|)",
            "timed_batch": int(bench_batch_size or (64 if h * w <= 64 * 64 else 16)) if records else None,
        },
        "source_weights": source_weights_record(meta.get("weights")),
        "temperature": temperature,
        "paddle_version": paddle.__version__,
    }
    info.update(meta)
    write_json(meta_path(out_prefix), info, indent=2)
    speeds = ", ".join(f"{n} {r['images_per_s']:.0f}" for n, r in records.items() if r.get("verified"))
    # debug: `ppvit export` logs the same per backend, with its distance to dygraph (no line printed twice)
    logger.debug("exported %s (%s); verified backends, images/s: %s; default backend: %s", out_prefix,
                ", ".join(f for f in files.values() if f), speeds or "none checked", chosen or "paddle (unverified)")
    return info


def _temperature(value):
    """A softmax temperature to record: None, or a finite float > 0 (``ValueError`` otherwise)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise ValueError(f"temperature must be a number > 0 (or None), got {value!r}")
    return float(value)


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
