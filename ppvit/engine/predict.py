"""What tools/export.py, infer.py and explain.py do (and the forward pass and prediction grid of
tools/eval.py), from a config.

    export(cfg)           Global.pretrained_model -> <run dir>/inference/inference.{json,pdiparams,meta.json}[,onnx]
    infer(cfg)            Infer.images through the exported model (Paddle Inference): top-k per image, a grid PNG
    explain(cfg)          LIME figures for test images (Explain.indices) or image files (Explain.images)
    eval_forward(engine)  what tools/eval.py runs: the dygraph model, or Paddle Inference (Eval.model /
                          Eval.use_predictor)

User mistakes raise ``ConfigError`` (or another ``ValueError``), which the tools print as one line, exit 2.
"""
import json
import os
import tempfile

import numpy as np
import paddle

from .builder import build_device, build_model, seed_everything
from .config import ConfigError, run_dir
from .logger import get_logger, setup_logging, strict_json

EXPORT_PREFIX = "inference"  # <folder>/inference.json + .pdiparams + .meta.json, as PaddleClas names it


# ------------------------------------------------------------------------------------------ shared pieces
def input_size(cfg):
    """The model's input side: ``Data.image_size``, or the transform pipeline's own size."""
    from ..data.transforms import get_pipeline

    return cfg["Data"]["image_size"] or get_pipeline(cfg["Data"]["transform"]).default_size


def class_names(cfg):
    """The dataset's class names, without reading the dataset; indices beyond them are named by number."""
    from ..data import CIFAR10_CLASSES, DIGITS_CLASSES

    names = list(DIGITS_CLASSES if cfg["Data"]["dataset"] == "digits" else CIFAR10_CLASSES)
    n = cfg["Arch"]["num_classes"]
    return (names + [str(i) for i in range(len(names), n)])[:n]


def weights_path(cfg):
    """``Global.pretrained_model``, else the run's ``best_model.pdparams`` (as tools/eval.py does)."""
    given = cfg["Global"]["pretrained_model"]
    if given:
        return given
    best = os.path.join(run_dir(cfg), "best_model.pdparams")
    if os.path.isfile(best):
        return best
    raise ConfigError(f"Global.pretrained_model is not set and {best} does not exist: give the weights "
                      "with -o Global.pretrained_model=path/to/model.pdparams")


@paddle.no_grad()
def load_model(cfg):
    """The config's model with its weights, in eval mode on ``Global.device``; checks the input size."""
    build_device(cfg["Global"]["device"])
    seed_everything(cfg["Global"]["seed"])
    cfg["Global"]["pretrained_model"] = weights_path(cfg)
    model = build_model(cfg, training=False)  # strict: the head must fit too
    model.eval()
    size = input_size(cfg)
    try:
        model(paddle.zeros([1, 3, size, size]))
    except ValueError as e:
        raise ConfigError(f"the model does not accept {size}x{size} inputs: {e} (set Data.image_size to "
                          "the model's input size)") from None
    return model


def preprocess_of(cfg):
    """The eval transform as ``export_model``'s preprocessing: resize, ``pixel * scale``, mean/std."""
    from ..data import mean_std

    stats = mean_std(cfg["Data"]["transform"])
    size = input_size(cfg)
    return {"resize": [size, size], "interpolation": "bilinear", "channel_order": "RGB",
            "scale": stats.pixel_scale / 255.0, "mean": list(stats.mean), "std": list(stats.std)}


def lime_mean_std(preprocess):
    """LIME normalises ``(x / 255 - mean) / std``; the same map as ``(x * scale - m) / s``."""
    k = 255.0 * preprocess["scale"]
    return [m / k for m in preprocess["mean"]], [s / k for s in preprocess["std"]]


def open_predictor(prefix, device, batch_size, key):
    from ..deploy import Predictor

    from ..provenance import check_export_current

    try:
        predictor = Predictor(prefix, device=device, batch_size=batch_size)
    except FileNotFoundError as e:
        raise ConfigError(f"{key}: {e}; write one with tools/export.py -c CONFIG "
                          "-o Global.pretrained_model=...") from None
    check_export_current(predictor.prefix, predictor.meta, key)  # never serve an export older than its weights
    return predictor


def predictor_of(model, folder, size, device, batch_size):
    """``model`` exported (no ONNX, no metadata) to ``folder`` and opened with Paddle Inference: for many
    forward passes the export pays for itself. ``folder`` must outlive the predictor (it rebuilds from the
    files if oneDNN fails)."""
    from ..deploy import Predictor, export_model

    prefix = os.path.join(folder, EXPORT_PREFIX)
    export_model(model, prefix, size, onnx=False)
    return Predictor(prefix, device=device, batch_size=batch_size)


def _as_list(value, key):
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ConfigError(f"{key} is an empty list")
    return values


def rgb_file(path, size=None):
    """An image file as RGB uint8 HWC, resized (cv2 bilinear, as the eval transforms) to ``size``."""
    import cv2

    from ..deploy import read_image

    image = np.ascontiguousarray(read_image(path)[:, :, ::-1])  # BGR -> RGB
    if size is not None and tuple(image.shape[:2]) != tuple(size):
        image = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
    return image


# ---------------------------------------------------------------------------------------------- export
def export(cfg):
    """tools/export.py: the inference model and its metadata; logs the predictor's difference to dygraph."""
    from ..deploy import Predictor, export_model

    log = get_logger()
    model = load_model(cfg)
    size = input_size(cfg)
    folder = cfg["Export"]["output"] or os.path.join(run_dir(cfg), "inference")
    prefix = os.path.join(folder, EXPORT_PREFIX)
    from ..provenance import weights_record

    weights = cfg["Global"]["pretrained_model"]
    meta = {"labels": class_names(cfg), "model": cfg["Arch"]["name"], "preprocess": preprocess_of(cfg),
            "arch": cfg["Arch"], "weights": os.path.abspath(weights), "source_weights": weights_record(weights),
            "transform": cfg["Data"]["transform"], "dataset": cfg["Data"]["dataset"]}
    info = export_model(model, prefix, size, meta, onnx=cfg["Export"]["onnx"])

    # the exported program must compute what the dygraph model computes
    x = np.random.RandomState(0).standard_normal((2, 3, size, size)).astype("float32")
    with paddle.no_grad():
        expected = model(paddle.to_tensor(x)).numpy()
    diff = float(np.abs(Predictor(prefix, device=cfg["Global"]["device"])(x) - expected).max())
    (log.warning if diff > 1e-3 else log.info)(f"predictor vs dygraph on random inputs: max abs diff {diff:.2e}")
    files = [f for f in info["files"].values() if f] + [os.path.basename(prefix) + ".meta.json"]
    log.info(f"exported {cfg['Arch']['name']} ({size}x{size}) to {folder}: {', '.join(files)}")
    return dict(info, prefix=prefix, max_abs_diff=diff)


# ----------------------------------------------------------------------------------------------- infer
def infer(cfg):
    """tools/infer.py: top-k per image file, printed; ``infer.json`` and a prediction grid PNG."""
    from ..deploy import classify_files, format_result
    from ..explain.grid import save_prediction_grid
    from ..io import atomic_path

    inf = cfg["Infer"]
    if not inf["images"]:
        raise ConfigError("Infer.images is not set: give image files and/or folders, e.g. "
                          "-o Infer.images=photo.png or -o Infer.images=[a.png,images/]")
    model = inf["model"] or os.path.join(run_dir(cfg), "inference")
    predictor = open_predictor(model, cfg["Global"]["device"], inf["batch_size"], "Infer.model")
    results = classify_files(predictor, _as_list(inf["images"], "Infer.images"), inf["topk"])
    for r in results:
        print(format_result(r), flush=True)

    out = inf["output"] or run_dir(cfg)
    os.makedirs(out, exist_ok=True)
    with atomic_path(os.path.join(out, "infer.json")) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(strict_json({"model": predictor.prefix, "source_weights": (predictor.meta or {}).get("source_weights"),
                                 "results": results}))
    shown = results[:inf["grid_images"]]
    if shown:
        png = save_prediction_grid(
            os.path.join(out, "infer_predictions.png"), [rgb_file(r["path"]) for r in shown],
            [r["topk"][0]["class_id"] for r in shown], class_names=predictor.labels,
            probs=[r["topk"][0]["score"] for r in shown])
        get_logger().info(f"prediction grid: {png}")
    get_logger().info(f"predictions: {os.path.join(out, 'infer.json')}")
    return results


# ----------------------------------------------------------------------------------------------- eval
class EvalForward:
    """tools/eval.py's forward pass: an NCHW float32 tensor -> logits tensor, through the engine's dygraph
    model or a Paddle Inference predictor. ``how`` says which, ``weights`` where its weights came from."""

    def __init__(self, fn, how, weights, predictor=None, tmp=None):
        self.fn, self.how, self.weights, self.predictor = fn, how, weights, predictor
        self._tmp = tmp  # the on-the-fly export's TemporaryDirectory: removed with this object

    def __call__(self, images):
        return self.fn(images)


def eval_forward(engine):
    """The forward pass of tools/eval.py (built once per engine; the metrics and the grid share it).

    ``Eval.model``: an exported model run by Paddle Inference (its weights, not Global.pretrained_model's).
    ``Eval.use_predictor``: the engine's model (Global.pretrained_model) exported to a temp folder first.
    Otherwise the dygraph model itself. Everything downstream of the logits is the same code.
    """
    cached = getattr(engine, "_eval_forward", None)
    if cached is not None:
        return cached
    cfg, ev = engine.cfg, engine.cfg["Eval"]
    device, batch_size = cfg["Global"]["device"], cfg["Data"]["eval_batch_size"]
    tmp = None
    if ev["model"]:
        predictor = open_predictor(ev["model"], device, batch_size, "Eval.model")
        how, weights = "Paddle Inference", predictor.prefix
        _check_eval_predictor(cfg, predictor, engine.eval_set[0][0])
    elif ev["use_predictor"]:
        tmp = tempfile.TemporaryDirectory(prefix="ppvit-eval-")
        predictor = predictor_of(engine.model, tmp.name, input_size(cfg), device, batch_size)
        how, weights = "Paddle Inference (exported on the fly)", cfg["Global"]["pretrained_model"]
    else:
        engine._eval_forward = EvalForward(engine.model, "Paddle dygraph", cfg["Global"]["pretrained_model"])
        return engine._eval_forward

    def run(images):  # the predictor takes and returns numpy
        return paddle.to_tensor(predictor(images.numpy()))

    engine._eval_forward = EvalForward(run, how, weights, predictor, tmp)
    return engine._eval_forward


def _check_eval_predictor(cfg, predictor, image):
    """An exported model must take the config's test images and give Arch.num_classes logits; one whose
    preprocessing differs from Data.transform's is evaluated on inputs it was not exported for (warned)."""
    shape = tuple(image.shape)
    if predictor.input_shape and tuple(predictor.input_shape) != shape:
        raise ConfigError(f"Eval.model: {predictor.prefix} takes inputs of shape {list(predictor.input_shape)}, "
                          f"the config's test images have shape {list(shape)} (Data.transform="
                          f"{cfg['Data']['transform']}, Data.image_size={cfg['Data']['image_size']})")
    n = predictor(np.asarray(image, np.float32)[None]).shape[-1]
    if n != cfg["Arch"]["num_classes"]:
        raise ConfigError(f"Eval.model: {predictor.prefix} predicts {n} classes, Arch.num_classes is "
                          f"{cfg['Arch']['num_classes']}")
    exported = (predictor.meta or {}).get("preprocess")
    expected = preprocess_of(cfg)
    if exported and any(not np.allclose(np.ravel(exported.get(k, np.nan)), np.ravel(expected[k]))
                        for k in ("scale", "mean", "std")):
        get_logger().warning(f"Eval.model: {predictor.prefix} was exported with preprocessing {exported}, "
                             f"this config's Data.transform gives {expected}; the metrics may not be meaningful")


# ------------------------------------------------------------------------------------------ eval grid
@paddle.no_grad()
def save_eval_grid(engine):
    """tools/eval.py: the first ``Eval.grid_images`` test images with predicted vs true labels (wrong ones
    red), ``<run dir>/predictions.png``, like notebook 004's ``show_images``; through ``eval_forward``."""
    from ..data import denormalize
    from ..explain.grid import save_prediction_grid

    n = min(engine.cfg["Eval"]["grid_images"], len(engine.eval_set))
    if n == 0 or not engine.is_main:
        return None
    images, labels = zip(*(engine.eval_set[i] for i in range(n)))
    engine.model.eval()
    forward = eval_forward(engine)  # the one tools/eval.py's metrics came from
    probs = paddle.nn.functional.softmax(forward(paddle.to_tensor(np.stack(images))), axis=-1).numpy()
    pred = probs.argmax(axis=1)
    png = save_prediction_grid(
        os.path.join(engine.run_dir, "predictions.png"),
        denormalize(np.stack(images), engine.cfg["Data"]["transform"]), pred,
        true=[int(np.ravel(y)[0]) for y in labels], class_names=engine.class_names,
        probs=probs[np.arange(n), pred], title=f"{engine.cfg['Arch']['name']}: first {n} test images")
    setup_logging(None, console=True).info(f"prediction grid: {png}")
    return png


# --------------------------------------------------------------------------------------------- explain
def _explain_items(cfg, size):
    """[(file stem, RGB uint8 image at the model's size, true label or None, title)]."""
    ex = cfg["Explain"]
    if ex["images"]:
        from ..deploy import expand_image_paths

        items = []
        for path in expand_image_paths(_as_list(ex["images"], "Explain.images")):
            stem = os.path.splitext(os.path.basename(path))[0]
            items.append((f"lime_{stem}", rgb_file(path, (size, size)), None, os.path.basename(path)))
        return items

    from ..data import build_dataset, denormalize

    indices = _as_list(ex["indices"], "Explain.indices")
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
        raise ConfigError(f"Explain.indices must be test-image indices (ints), got {ex['indices']!r}")
    dataset = build_dataset(cfg["Data"], "test")
    bad = [i for i in indices if not 0 <= i < len(dataset)]
    if bad:
        raise ConfigError(f"Explain.indices {bad} out of range: the test split has {len(dataset)} images")
    items = []
    for i in indices:
        chw, label = dataset[i]
        image = np.rint(denormalize(chw, cfg["Data"]["transform"]) * 255.0).astype(np.uint8)
        items.append((f"lime_test{i}", image, int(np.ravel(label)[0]), f"test image {i}"))
    return items


def explain(cfg):
    """tools/explain.py: one LIME figure (image | superpixels | explanation per class) per image.

    Explains the ``Explain.top_k`` most probable classes and, for test images, the true class (what notebook
    004 explained). Every image gets a fresh explainer seeded with ``Global.seed``, so a figure does not
    depend on which other images were asked for.
    """
    from ..explain import LimeImageExplainer, paddle_predict_fn, predictor_predict_fn
    from ..io import atomic_path
    from ..provenance import weights_record

    ex, g = cfg["Explain"], cfg["Global"]
    log = get_logger()
    names = class_names(cfg)
    with tempfile.TemporaryDirectory(prefix="ppvit-explain-") as tmp:
        if ex["model"]:  # an exported model: its own preprocessing and labels
            build_device(g["device"])
            predictor = open_predictor(ex["model"], g["device"], ex["batch_size"], "Explain.model")
            if not predictor.meta:
                raise ConfigError(f"Explain.model: {predictor.prefix} has no .meta.json (preprocessing unknown)")
            size = predictor.input_shape[1]
            names = predictor.labels or names
            predict_fn = predictor_predict_fn(predictor, *lime_mean_std(predictor.meta["preprocess"]))
            how = f"Paddle Inference ({predictor.prefix})"
            source, exported = predictor.meta.get("source_weights"), predictor.prefix
        else:
            model, size = load_model(cfg), input_size(cfg)
            mean, std = lime_mean_std(preprocess_of(cfg))
            source, exported = weights_record(g["pretrained_model"]), None
            if ex["use_predictor"]:  # thousands of forward passes: worth the export
                predictor = predictor_of(model, tmp, size, g["device"], ex["batch_size"])
                predict_fn = predictor_predict_fn(predictor, mean, std)
                how = "Paddle Inference (exported on the fly)"
            else:
                predict_fn = paddle_predict_fn(model, mean, std)
                how = "Paddle dygraph"

        items = _explain_items(cfg, size)
        out = ex["output"] or os.path.join(run_dir(cfg), "explain")
        log.info(f"LIME on {len(items)} image(s), {ex['num_samples']} samples each, through {how}")
        written = []
        for n, (stem, image, label, where) in enumerate(items, 1):
            probs = predict_fn(image[None])[0]
            if ex["top_k"] > len(probs):
                raise ConfigError(f"Explain.top_k={ex['top_k']} exceeds the model's {len(probs)} classes")
            classes = [int(c) for c in np.argsort(-probs, kind="stable")[:ex["top_k"]]]
            if label is not None and label not in classes:
                classes.append(label)
            explainer = LimeImageExplainer(predict_fn, random_seed=g["seed"], progress=True)
            explainer.interpret(image, interpret_class=classes, num_samples=ex["num_samples"],
                                batch_size=ex["batch_size"], visual=False)
            pred = classes[0]
            title = f"{where}: predicted {_name(names, pred)} ({probs[pred]:.2f})"
            if label is not None:
                title += f", true {_name(names, label)}" + ("" if label == pred else " (wrong)")
            path = _unique(os.path.join(out, stem + ".png"), written)
            explainer.save_figure(path, class_names=names, title=title)
            written.append(path)
            log.info(f"[{n}/{len(items)}] {title} -> {path}")
        index = os.path.join(out, "explain.json")  # which weights the figures explain
        with atomic_path(index) as tmp_json:
            with open(tmp_json, "w", encoding="utf-8") as f:
                f.write(strict_json({"source_weights": source, "model": exported, "forward": how,
                                     "num_samples": ex["num_samples"], "seed": g["seed"],
                                     "figures": [os.path.relpath(p, out) for p in written]}))
        log.info(f"explanations: {index}")
    return written


def _name(names, i):
    return names[i] if i < len(names) else str(i)


def _unique(path, taken):
    """Two files with the same stem (from different folders) must not overwrite each other's figure."""
    base, ext = os.path.splitext(path)
    k = 1
    while path in taken:
        path = f"{base}_{k}{ext}"
        k += 1
    return path
