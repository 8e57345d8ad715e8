"""``ppvit eval`` (tools/eval.py): loss, top-1, top-5 and per-class accuracy of the weights on the test split,
``eval.json``, a confusion-matrix PNG and a prediction grid; through the dygraph model or Paddle Inference
(``Eval.model`` / ``Eval.use_predictor``), with the same metric code downstream of the logits."""
import os
import tempfile

import numpy as np
import paddle
from tqdm import tqdm

from ..engine import Engine, load_config
from ..engine.config import ConfigError
from ..engine.evaluator import evaluate as evaluate_loader, per_class_table
from ..engine.logger import close_logging, get_logger, setup_logging
from ..engine.plots import plot_confusion_matrix
from ..io import write_json
from ..io.provenance import source_metadata, weights_record
from ..utils.softmax import softmax
from .common import open_predictor, predictor_of, preprocess_of


def evaluate(config_path=None, overrides=(), cfg=None):
    """Evaluate ``Global.pretrained_model`` (else the run's best model, or the exported ``Eval.model``) on
    the test split; writes ``eval.json`` and ``confusion_matrix.png``; returns the metrics dict."""
    return evaluate_run(Engine(cfg if cfg is not None else load_config(config_path, overrides), mode="eval"))


def run(cfg):
    """``ppvit eval``: the metrics, then notebook 004's prediction grid (``<run dir>/predictions.png``)."""
    engine = Engine(cfg, mode="eval")
    metrics = evaluate_run(engine)
    save_eval_grid(engine)
    return metrics


def evaluate_run(engine):
    """``ppvit eval``: loss/top-1/top-5 of ``Global.pretrained_model`` (or of the exported ``Eval.model``) on
    the test split, a per-class table and a confusion-matrix PNG (``<run dir>/confusion_matrix.png``)."""
    e = engine
    log = setup_logging(None, console=e.is_main)
    try:
        forward = eval_forward(e)  # the dygraph model or a Paddle Inference predictor
        n_batches = len(e.eval_loader)
        with tqdm(total=n_batches, desc="eval", disable=not e.is_main, leave=False, mininterval=1.0) as bar:
            res = evaluate_loader(forward.fn, e.eval_loader, e.eval_loss_fn, e.cfg["Arch"]["num_classes"], progress=bar)
        names = e.class_names + [str(i) for i in range(len(e.class_names), res["confusion"].shape[0])]
        table = per_class_table(res["confusion"], names)
        log.info(f"{e.cfg['Arch']['name']} on {e.cfg['Data']['dataset']} test ({res['count']} images), "
                 f"weights {forward.weights}, through {forward.how}")
        log.info(f"loss {res['loss']:.4f} | top-1 {100 * res['top1']:.2f}% | top-5 {100 * res['top5']:.2f}%")
        log.info(table)
        if e.is_main:
            out = e.run_dir
            os.makedirs(out, exist_ok=True)
            png = os.path.join(out, "confusion_matrix.png")
            plot_confusion_matrix(res["confusion"], names, png)
            result = {k: res[k] for k in ("loss", "top1", "top5", "count")}
            if e.cfg["Eval"]["model"]:  # an exported model: the weights it was exported from
                source = (forward.predictor.meta or {}).get("source_weights")
            else:
                source = weights_record(forward.weights)
            e.source_weights = source  # predictions.png records it too
            result.update(weights=forward.weights, source_weights=source, forward=forward.how, class_names=names,
                          confusion=res["confusion"].tolist())
            write_json(os.path.join(out, "eval.json"), result)
            log.info(f"confusion matrix: {png}")
            log.info(f"metrics: {os.path.join(out, 'eval.json')}")
        return res
    finally:
        close_logging()


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
        predictor = open_predictor(ev["model"], device, batch_size, "Eval.model", ev["backend"], cfg=cfg)
        how, weights = predictor.backend_label, predictor.prefix
        _check_eval_predictor(cfg, predictor, engine.eval_set[0][0])
    elif ev["use_predictor"]:
        tmp = tempfile.TemporaryDirectory(prefix="ppvit-eval-")
        predictor = predictor_of(engine.model, tmp.name, cfg, device, batch_size, ev["backend"])
        how, weights = f"{predictor.backend_label} (exported on the fly)", cfg["Global"]["pretrained_model"]
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
def save_eval_grid(engine):
    """``ppvit eval``: the first ``Eval.grid_images`` test images with predicted vs true labels (wrong ones
    red), ``<run dir>/predictions.png``, like notebook 004's ``show_images``; through ``eval_forward``."""
    from ..data import denormalize
    from ..explain.grid import save_prediction_grid  # the grid of predictions lives with the other figures

    n = min(engine.cfg["Eval"]["grid_images"], len(engine.eval_set))
    if n == 0 or not engine.is_main:
        return None
    images, labels = zip(*(engine.eval_set[i] for i in range(n)))
    engine.model.eval()
    forward = eval_forward(engine)  # the one tools/eval.py's metrics came from
    probs = softmax(forward(paddle.to_tensor(np.stack(images))).numpy())
    pred = probs.argmax(axis=1)
    png = save_prediction_grid(
        os.path.join(engine.run_dir, "predictions.png"),
        denormalize(np.stack(images), engine.cfg["Data"]["transform"]), pred,
        true=[int(np.ravel(y)[0]) for y in labels], class_names=engine.class_names,
        probs=probs[np.arange(n), pred], title=f"{engine.cfg['Arch']['name']}: first {n} test images",
        metadata=source_metadata(getattr(engine, "source_weights", None)))
    setup_logging(None, console=True).info(f"prediction grid: {png}")
    return png
