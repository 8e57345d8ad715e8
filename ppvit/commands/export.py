"""``ppvit export`` (tools/export.py): Global.pretrained_model -> <run dir>/inference/inference.{json,pdiparams,
meta.json}[,onnx], checked against the dygraph model."""
import os

import numpy as np

from ..engine.config import run_dir
from ..engine.logger import get_logger
from ..engine.runfiles import run_folder
from .common import EXPORT_PREFIX, class_names, input_size, load_model, preprocess_of

EXPORT_FOLDER = run_folder("inference")  # Export.output's default, in the run folder


def _check_images(cfg, log):
    """The first ``Export.check_images`` test images of the run's data (preprocessed as in evaluation), which
    every backend must classify as the dygraph model does; None when off or when the data is not here."""
    n = cfg["Export"]["check_images"]
    if not n:
        return None
    from ..data import DataError, build_dataset, data_config

    try:
        dataset = build_dataset(dict(data_config(cfg), limit=None), "test", cfg["Arch"]["img_size"])
    except DataError as e:  # e.g. no CIFAR archive on this machine: verification keeps its fixed batch
        log.info(f"export: no test images to verify the backends on ({e}); using the fixed check batch only")
        return None
    from ..data.loader import first_readable

    samples = first_readable(dataset, n, cfg["Data"]["skip_bad_images"])
    return np.stack([np.asarray(image, dtype="float32") for image, _ in samples])


def _temperature(cfg, weights, log):
    """The softmax temperature the export records for infer: ``Export.temperature``, else the one
    ``ppvit eval -o Eval.calibrate=true`` fitted for these weights (logged; a degenerate fit is not recorded,
    with a warning), else None."""
    from .evaluate import fitted_temperature

    if cfg["Export"]["temperature"] is not None:
        log.info(f"temperature {cfg['Export']['temperature']:.4g} (Export.temperature) recorded for infer")
        return cfg["Export"]["temperature"]
    temperature, source, at_bound = fitted_temperature(cfg, weights)
    if at_bound:
        log.warning(f"the temperature in {source} ({temperature:.4g}) is a degenerate fit (at the end of the searched "
                    "range): not recorded; calibrate on a harder held-out split, or set -o Export.temperature=T")
        return None
    if temperature is not None:
        log.info(f"temperature {temperature:.4g} (fitted by Eval.calibrate, {source}) recorded for infer; "
                 "-o Export.temperature=1.0 exports without it")
    return temperature


def run(cfg):
    """``ppvit export``: the inference model and its metadata; logs the predictor's difference to dygraph."""
    from ..deploy import export_model

    log = get_logger()
    model = load_model(cfg)
    size = input_size(cfg)
    folder = cfg["Export"]["output"] or os.path.join(run_dir(cfg), EXPORT_FOLDER)
    prefix = os.path.join(folder, EXPORT_PREFIX)
    weights = cfg["Global"]["pretrained_model"]
    # export_model records the weights' path and sha256 (source_weights): a later infer/eval/explain refuses
    # the export once they change
    meta = {"labels": class_names(cfg), "model": cfg["Arch"]["name"], "preprocess": preprocess_of(cfg),
            "arch": cfg["Arch"], "weights": os.path.abspath(weights),
            "transform": cfg["Data"]["transform"], "dataset": cfg["Data"]["dataset"],
            "temperature": _temperature(cfg, weights, log)}
    info = export_model(model, prefix, size, meta, onnx=cfg["Export"]["onnx"],
                        check_images=_check_images(cfg, log))

    # export_model ran every backend against the dygraph model; say how far each one is from it
    for name, rec in info["backends"].items():
        if rec.get("verified"):
            log.info(f"{name}: {rec['images_per_s']:.0f} images/s, max abs diff to dygraph {rec['max_abs_diff']:.2e}")
    log.info(f"default backend (Infer/Eval/Explain.backend=auto): {info['backend']}")
    diff = info["backends"][info["backend"]]["max_abs_diff"]
    files = [f for f in info["files"].values() if f] + [os.path.basename(prefix) + ".meta.json"]
    log.info(f"exported {cfg['Arch']['name']} ({size}x{size}) to {folder}: {', '.join(files)}")
    return dict(info, prefix=prefix, max_abs_diff=diff)
