"""``ppvit export`` (tools/export.py): Global.pretrained_model -> <run dir>/inference/inference.{json,pdiparams,
meta.json}[,onnx], checked against the dygraph model."""
import os

import numpy as np
import paddle

from ..engine.config import run_dir
from ..engine.logger import get_logger
from ..io.provenance import weights_record
from .common import EXPORT_PREFIX, class_names, input_size, load_model, preprocess_of


def run(cfg):
    """``ppvit export``: the inference model and its metadata; logs the predictor's difference to dygraph."""
    from ..deploy import Predictor, export_model

    log = get_logger()
    model = load_model(cfg)
    size = input_size(cfg)
    folder = cfg["Export"]["output"] or os.path.join(run_dir(cfg), "inference")
    prefix = os.path.join(folder, EXPORT_PREFIX)
    weights = cfg["Global"]["pretrained_model"]
    # which weights it came from (path and sha256): a later infer/eval/explain refuses it once they change
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
