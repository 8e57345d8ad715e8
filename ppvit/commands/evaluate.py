"""``ppvit eval`` (tools/eval.py): loss, top-1, top-5, per-class accuracy/precision/recall/F1 and the expected
calibration error of the weights on the test split, ``eval.json``, a confusion-matrix PNG, a reliability diagram PNG
and a prediction grid; with ``Eval.calibrate`` the temperature (temperature scaling) fitted on that split, which
``ppvit export`` then records for ``ppvit infer``; through the dygraph model or an exported model's verified
backend (``Eval.model`` / ``Eval.use_predictor``), with the same metric code downstream of the logits.

The files go to ``Eval.output`` (default: the run folder) and never replace the evaluation of other weights
(``eval_outputs``): ``eval.json``, ``confusion_matrix.png``, ``reliability.png`` and ``predictions.png`` hold the
first evaluation written there, or a re-evaluation of the same weights; an evaluation of other weights (another
weight file, or an exported model) is written beside them as ``eval_<name>.json``, ``confusion_matrix_<name>.png``,
``reliability_<name>.png`` and ``predictions_<name>.png``, ``<name>`` being the weight file's stem
(``final_model``) or the exported model's folder (``inference``). The log says which files were written."""
import hashlib
import json
import os
import re
import tempfile

import numpy as np
import paddle
from tqdm import tqdm

from ..data.loader import first_readable
from ..engine import Engine, load_config
from ..engine.config import ConfigError
from ..engine.evaluator import (ECE_BINS, calibration_bins, evaluate as evaluate_loader, expected_calibration_error,
                                fit_temperature, nll, per_class_metrics, per_class_table, reliability)
from ..engine.logger import close_logging, get_logger, setup_logging
from ..engine.plots import plot_confusion_matrix, plot_reliability_diagram
from ..engine.runfiles import run_file, run_pattern
from ..io import write_json
from ..io.provenance import source_metadata, weights_record
from ..utils.softmax import softmax
from .common import open_predictor, predictor_of, preprocess_of


def evaluate(config_path=None, overrides=(), cfg=None):
    """Evaluate ``Global.pretrained_model`` (else the run's best model, or the exported ``Eval.model``) on
    the test split; writes ``eval.json`` and ``confusion_matrix.png`` (named by the weights when the folder
    holds an evaluation of other weights: ``eval_outputs``); returns the metrics dict."""
    return evaluate_run(Engine(cfg if cfg is not None else load_config(config_path, overrides), mode="eval"))


def run(cfg):
    """``ppvit eval``: the metrics, then notebook 004's prediction grid (``predictions.png`` beside
    ``eval.json``, named as it is), both through one forward pass."""
    engine = Engine(cfg, mode="eval")
    forward = eval_forward(engine)
    metrics = evaluate_run(engine, forward)
    save_eval_grid(engine, metrics, forward)
    return metrics


def evaluate_run(engine, forward=None):
    """``ppvit eval``: loss/top-1/top-5 of ``Global.pretrained_model`` (or of the exported ``Eval.model``) on
    the test split, a per-class table, ``eval.json`` and a confusion-matrix PNG in ``Eval.output`` (the run
    folder by default), under the names ``eval_outputs`` chooses. ``forward``: an ``eval_forward(engine)``,
    else one is made. Returns the metrics dict, with ``paths`` (``eval_outputs``'s file paths; None on ranks
    other than 0) and ``source_weights`` (the evaluated weights' record)."""
    e = engine
    log = setup_logging(None, console=e.is_main)
    try:
        forward = forward or eval_forward(e)  # the dygraph model or an exported model's predictor
        # where the results go, settled before the test split is run (a name clash or a bad Eval.output is
        # said at once, not after the evaluation)
        (source, model), paths = _choose_outputs(e, forward, log) if e.is_main else ((None, None), None)
        n_batches = len(e.eval_loader)
        calibrate = e.cfg["Eval"]["calibrate"]
        with tqdm(total=n_batches, desc="eval", disable=not e.is_main, leave=False, mininterval=1.0) as bar:
            res = evaluate_loader(forward.fn, e.eval_loader, e.eval_loss_fn, e.cfg["Arch"]["num_classes"], progress=bar,
                                  keep_logits=calibrate)
        names = e.class_names + [str(i) for i in range(len(e.class_names), res["confusion"].shape[0])]
        table = per_class_table(res["confusion"], names)
        res.update(calibration_metrics(res, calibrate))
        log.info(f"{e.cfg['Arch']['name']} on {e.cfg['Data']['dataset']} test ({res['count']} images), "
                 f"weights {forward.weights}, through {forward.how}")
        log.info(f"loss {res['loss']:.4f} | top-1 {100 * res['top1']:.2f}% | top-5 {100 * res['top5']:.2f}% | "
                 f"macro F1 {100 * res['per_class']['macro_f1']:.2f}% | ECE {100 * res['ece']:.2f}%")
        log.info(table)
        res.update(paths=paths, source_weights=source)
        if calibrate and res["calibration"]["temperature"] is None:
            log.warning(f"temperature scaling skipped: {res['calibration']['skipped']}")
        elif calibrate:
            cal = res["calibration"]
            log.info(f"temperature scaling (fitted on these {res['count']} images): T = {cal['temperature']:.4f}; "
                     f"ECE {100 * res['ece']:.2f}% -> {100 * cal['ece']:.2f}%, NLL {cal['nll_raw']:.4f} -> "
                     f"{cal['nll']:.4f}, top-1 unchanged ({100 * cal['top1']:.2f}%)")
            if cal["at_bound"]:
                log.warning(f"the fitted temperature {cal['temperature']} is at the end of the searched range: the "
                            "NLL keeps falling beyond it (e.g. every image right with a wide margin), so this split "
                            "cannot calibrate the model and export will not record it; calibrate on a larger or "
                            "harder held-out split")
        if e.is_main:
            if os.path.exists(paths["grid"]):  # the same weights' earlier grid: redrawn by save_eval_grid, if at all
                os.remove(paths["grid"])
            os.makedirs(os.path.dirname(paths["metrics"]) or ".", exist_ok=True)
            plot_confusion_matrix(res["confusion"], names, paths["confusion_matrix"])
            curves = {f"raw (ECE {100 * res['ece']:.2f}%)": res["reliability"]}
            if calibrate and res["calibration"]["temperature"] is not None:
                cal = res["calibration"]
                curves[f"T = {cal['temperature']:.3g} (ECE {100 * cal['ece']:.2f}%)"] = cal["reliability"]
            plot_reliability_diagram(curves, paths["reliability"],
                                     title=f"Reliability diagram, {e.cfg['Arch']['name']} ({res['count']} images, "
                                           f"{ECE_BINS} bins)")
            result = {k: res[k] for k in ("loss", "top1", "top5", "count", "per_class", "ece", "reliability")}
            if calibrate:
                result["calibration"] = res["calibration"]
            result.update(weights=forward.weights, source_weights=source, model=model, forward=forward.how,
                          class_names=names, confusion=res["confusion"].tolist())
            write_json(paths["metrics"], result)
            log.info(f"confusion matrix: {paths['confusion_matrix']}")
            log.info(f"reliability diagram: {paths['reliability']}")
            log.info(f"metrics: {paths['metrics']}")
        return res
    finally:
        close_logging()


def calibration_metrics(res, calibrate=False):
    """eval.json's per-class and calibration fields from an ``evaluator.evaluate`` result: ``per_class``
    (``per_class_metrics``), ``ece`` and ``reliability`` (15 bins) of the raw softmax; with ``calibrate``,
    ``calibration``: the fitted ``temperature`` (``fit_temperature`` on ``res``'s logits), the ECE, NLL and top-1
    after dividing the logits by it (``ece``, ``nll``, ``top1``; ``nll_raw`` before), its reliability bins, and
    ``at_bound`` (the fit stopped at the end of the searched range); ``temperature`` None and ``skipped`` (why)
    when the logits are not finite."""
    out = {"per_class": per_class_metrics(res["confusion"]), "ece": expected_calibration_error(res["calibration_bins"]),
           "reliability": reliability(res["calibration_bins"])}
    if calibrate and not np.isfinite(res["logits"]).all():
        out["calibration"] = {"temperature": None, "skipped": "the model gives non-finite logits on this split"}
    elif calibrate:
        logits, labels = res["logits"], res["labels"]
        temperature, at_bound = fit_temperature(logits, labels)
        probs = softmax(logits / temperature)
        bins = calibration_bins(probs, labels)
        out["calibration"] = {
            "method": "temperature scaling (Guo et al. 2017): softmax(logits / T), T minimising the NLL on this split",
            "temperature": temperature, "at_bound": at_bound, "ece": expected_calibration_error(bins),
            "nll_raw": nll(logits, labels), "nll": nll(logits, labels, temperature),
            "top1": float((probs.argmax(axis=1) == labels).mean()), "reliability": reliability(bins)}
    return out


def fitted_temperature(cfg, weights):
    """The temperature ``ppvit eval -o Eval.calibrate=true`` fitted for the weight file ``weights``:
    ``(T, eval.json path, at_bound)`` from the newest ``eval*.json`` in ``Eval.output`` or the run folder whose
    ``source_weights`` has the file's sha256 and which holds a calibration; ``at_bound``: the fit stopped at the
    end of the searched range (a degenerate fit, not to be applied). ``(None, None, False)`` when there is none."""
    import glob

    from ..engine.config import run_dir

    record = weights_record(weights)
    if record is None:
        return None, None, False
    found = []
    folders = {os.path.abspath(f) for f in (cfg["Eval"]["output"], run_dir(cfg)) if f}
    for path in sorted(p for folder in folders for p in glob.glob(os.path.join(folder, "eval*.json"))):
        held = _read_eval_json(path)
        if not isinstance(held, dict) or (held.get("source_weights") or {}).get("sha256") != record["sha256"]:
            continue
        calibration = held.get("calibration") or {}
        temperature = calibration.get("temperature")
        if isinstance(temperature, (int, float)) and temperature > 0:
            found.append((os.path.getmtime(path), float(temperature), path, bool(calibration.get("at_bound"))))
    if not found:
        return None, None, False
    return max(found)[1:]


_MISSING = object()
# the first evaluation in a folder, and those of other weights beside it (eval_outputs)
EVAL_FILES = {"metrics": run_file("eval.json"), "confusion_matrix": run_file("confusion_matrix.png"),
              "reliability": run_file("reliability.png"), "grid": run_file("predictions.png")}
EVAL_PATTERNS = tuple(run_pattern(os.path.splitext(n)[0] + "_*" + os.path.splitext(n)[1]) for n in EVAL_FILES.values())
DYGRAPH = "Paddle dygraph"  # EvalForward.how of the model itself (eval.json's "forward")


def _read_eval_json(path):
    """An earlier ``eval.json``: its dict, ``_MISSING`` when there is none, None when it cannot be read."""
    if not os.path.exists(path):
        return _MISSING
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _real(path):
    return os.path.realpath(path) if path else None


def evaluated(record):
    """What an ``eval.json`` evaluated: (source weight file, exported model prefix or None), as real paths."""
    return _real((record.get("source_weights") or {}).get("path")), _real(record.get("model"))


def _describe(source, model):
    weights = source or "unknown weights"
    return f"the exported model {model} (from {weights})" if model else weights


def _tag(source, model):
    """The name an evaluation's files carry: the weight file's stem, or the exported model's folder."""
    if model:
        folder, prefix = os.path.split(model)
        name = os.path.basename(folder) + ("" if prefix == "inference" else "_" + prefix)
    else:
        name = os.path.splitext(os.path.basename(source or "weights"))[0]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "weights"


def eval_outputs(out, source, model, how, log=None):
    """The files of an evaluation in the folder ``out``: ``{"metrics", "confusion_matrix", "reliability", "grid"}``
    paths.

    ``source``: the evaluated weights' record (``weights_record``: path and sha256) or None; ``model``: the
    exported model's prefix, or None for the weight file itself (dygraph or exported on the fly). The plain
    names (``eval.json``, ``confusion_matrix.png``, ``predictions.png``) are used when none of them exists, or
    when ``eval.json`` records the same weights (then they are replaced: the same weights re-evaluated, perhaps
    a newer version of the file or through another backend, which is logged). Otherwise the files carry the
    weights' name (``eval_final_model.json``; the exported model's folder: ``eval_inference.json``) and, if
    those too hold another evaluation, the first 8 hex digits of the weights' sha256. Nothing is written here;
    raises ``ConfigError`` only when every candidate name is taken.
    """
    key = (_real((source or {}).get("path")), _real(model))
    digest = (source or {}).get("sha256") or hashlib.sha256(str(key).encode()).hexdigest()
    tag = _tag(key[0], key[1])
    plain = os.path.join(out, EVAL_FILES["metrics"])
    replaced = False
    for suffix in ("", f"_{tag}", f"_{tag}_{digest[:8]}"):
        paths = {k: os.path.join(out, f"{os.path.splitext(n)[0]}{suffix}{os.path.splitext(n)[1]}")
                 for k, n in EVAL_FILES.items()}
        before = _read_eval_json(paths["metrics"])
        if before is _MISSING:
            if any(os.path.exists(p) for p in paths.values()):
                continue  # figures of an evaluation whose eval.json is gone: whose they are is unknown
            break
        if before is not None and key != (None, None) and evaluated(before) == key:
            if log is not None:
                changes = []
                old_sha = (before.get("source_weights") or {}).get("sha256")
                if old_sha and source and source.get("sha256") and old_sha != source["sha256"]:
                    changes.append(f"the file has changed since (sha256 {old_sha[:12]} -> {source['sha256'][:12]})")
                if before.get("forward") and before.get("forward") != how:
                    changes.append(f"it was evaluated through {before['forward']}")
                log.info(f"replacing the earlier evaluation of the same weights in {paths['metrics']}"
                         + (f" ({'; '.join(changes)})" if changes else ""))
            replaced = True
            break
    else:
        raise ConfigError(f"{out} already holds evaluations of other weights under {plain} and the names for "
                          f"{_describe(*key)}; write this one elsewhere with -o Eval.output=FOLDER")
    if suffix and not replaced and log is not None:
        held = _read_eval_json(plain)
        whose = _describe(*evaluated(held)) if isinstance(held, dict) else "other weights"
        log.info(f"{plain} holds the evaluation of {whose}; this evaluation of {_describe(*key)} is written beside "
                 f"it as {os.path.basename(paths['metrics'])}, {os.path.basename(paths['confusion_matrix'])}, "
                 f"{os.path.basename(paths['reliability'])} and {os.path.basename(paths['grid'])} (-o "
                 "Eval.output=FOLDER writes it elsewhere)")
    return paths


def _choose_outputs(engine, forward, log=None):
    """Where this engine's evaluation goes (``eval_outputs`` in ``Eval.output``, else the run folder; created
    when the results are written): ((the weights' record, the exported model's prefix or None), paths)."""
    if engine.cfg["Eval"]["model"]:  # an exported model: the weights it was exported from
        source = (forward.predictor.meta or {}).get("source_weights")
        model = os.path.abspath(forward.predictor.prefix)
    else:
        source, model = weights_record(forward.weights), None
    out = engine.cfg["Eval"]["output"] or engine.run_dir
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"Eval.output: {out} is a file, not a folder; give a folder for eval.json and its figures")
    return (source, model), eval_outputs(out, source, model, forward.how, log)


class EvalForward:
    """tools/eval.py's forward pass: an NCHW float32 tensor -> logits tensor, through the engine's dygraph
    model or an exported model's predictor. ``how`` says which, ``weights`` where its weights came from."""

    def __init__(self, fn, how, weights, predictor=None, tmp=None):
        self.fn, self.how, self.weights, self.predictor = fn, how, weights, predictor
        self._tmp = tmp  # the on-the-fly export's TemporaryDirectory: removed with this object

    def __call__(self, images):
        return self.fn(images)


def eval_forward(engine):
    """The forward pass of tools/eval.py (``run`` builds it once: the metrics and the grid share it).

    ``Eval.model``: an exported model run by its verified backend (its weights, not Global.pretrained_model's).
    ``Eval.use_predictor``: the engine's model (Global.pretrained_model) exported to a temp folder first.
    Otherwise the dygraph model itself. Everything downstream of the logits is the same code.
    """
    cfg, ev = engine.cfg, engine.cfg["Eval"]
    device, batch_size = cfg["Global"]["device"], cfg["Data"]["eval_batch_size"]
    tmp = None
    if ev["model"]:
        predictor = open_predictor(ev["model"], device, batch_size, "Eval.model", ev["backend"], cfg=cfg)
        how, weights = predictor.backend_label, predictor.prefix
        _check_eval_predictor(cfg, predictor, first_readable(engine.eval_set, 1, cfg["Data"]["skip_bad_images"])[0][0])
    elif ev["use_predictor"]:
        tmp = tempfile.TemporaryDirectory(prefix="ppvit-eval-")
        predictor = predictor_of(engine.model, tmp.name, cfg, device, batch_size, ev["backend"])
        how, weights = f"{predictor.backend_label} (exported on the fly)", cfg["Global"]["pretrained_model"]
    else:
        return EvalForward(engine.model, DYGRAPH, cfg["Global"]["pretrained_model"])

    def run(images):  # the predictor takes and returns numpy
        return paddle.to_tensor(predictor(images.numpy()))

    return EvalForward(run, how, weights, predictor, tmp)


def _check_eval_predictor(cfg, predictor, image):
    """An exported model must take the config's test images and give Arch.num_classes logits; one whose
    preprocessing differs from Data.transform's is evaluated on inputs it was not exported for (warned)."""
    shape = tuple(image.shape)
    if predictor.input_shape and tuple(predictor.input_shape) != shape:
        raise ConfigError(f"Eval.model: {predictor.prefix} takes inputs of shape {list(predictor.input_shape)}, "
                          f"the config's test images have shape {list(shape)} (Data.transform="
                          f"{cfg['Data']['transform']}, Arch.img_size={cfg['Arch']['img_size']}; set -o Arch.img_size=... to match)")
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


@paddle.no_grad()
def save_eval_grid(engine, metrics=None, forward=None):
    """``ppvit eval``: the first ``Eval.grid_images`` test images with predicted vs true labels (wrong ones
    red), ``predictions.png`` beside ``eval.json`` (named as it is: ``metrics["paths"]`` of ``evaluate_run``,
    else chosen here), like notebook 004's ``show_images``; through ``forward`` (else a new ``eval_forward``)."""
    from ..data import data_config, denormalize
    from ..explain.grid import save_prediction_grid  # the grid of predictions lives with the other figures

    n = min(engine.cfg["Eval"]["grid_images"], len(engine.eval_set))
    if n == 0 or not engine.is_main:
        return None
    samples = first_readable(engine.eval_set, n, engine.cfg["Data"]["skip_bad_images"])
    n = len(samples)
    images, labels = zip(*samples)
    engine.model.eval()
    forward = forward or eval_forward(engine)  # the one tools/eval.py's metrics came from
    probs = softmax(forward(paddle.to_tensor(np.stack(images))).numpy())
    pred = probs.argmax(axis=1)
    if metrics is not None and metrics.get("paths"):  # beside its eval.json
        paths, source = metrics["paths"], metrics["source_weights"]
    else:
        (source, _), paths = _choose_outputs(engine, forward)
    os.makedirs(os.path.dirname(paths["grid"]) or ".", exist_ok=True)
    png = save_prediction_grid(
        paths["grid"],
        denormalize(np.stack(images), data_config(engine.cfg)), pred,
        true=[int(np.ravel(y)[0]) for y in labels], class_names=engine.class_names,
        probs=probs[np.arange(n), pred], title=f"{engine.cfg['Arch']['name']}: first {n} test images",
        metadata=source_metadata(source))
    setup_logging(None, console=True).info(f"prediction grid: {png}")
    return png
