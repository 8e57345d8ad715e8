"""``ppvit infer`` (tools/infer.py): Infer.images through the exported model (its verified backend): top-k per
image printed, ``infer.json`` and a prediction grid PNG. When the export records a softmax temperature
(``ppvit eval -o Eval.calibrate=true``, then ``ppvit export``), the scores are the calibrated
``softmax(logits / T)`` and the raw ``softmax(logits)`` stay beside them (``raw_score``)."""
import os

from ..engine.config import ConfigError, run_dir
from ..engine.logger import get_logger
from ..engine.runfiles import run_file
from ..io import write_json
from ..io.provenance import source_metadata
from .common import EXPORT_PREFIX, image_files, open_predictor, rgb_file

INFER_JSON, INFER_GRID = run_file("infer.json"), run_file("infer_predictions.png")


def run(cfg):
    """``ppvit infer``: top-k per image file, printed; ``infer.json`` and a prediction grid PNG."""
    from ..deploy import classify_files, format_result
    from ..explain.grid import save_prediction_grid
    from ..io.images import ImageReadError

    inf = cfg["Infer"]
    files = image_files(inf["images"], "Infer.images")  # none or a wrong path stops before any model is read
    model = inf["model"] or os.path.join(run_dir(cfg), EXPORT_PREFIX)
    predictor = open_predictor(model, cfg["Global"]["device"], inf["batch_size"], "Infer.model", inf["backend"],
                               cfg=cfg)
    temperature = predictor.temperature
    if temperature is not None:
        get_logger().info(f"scores calibrated with the export's temperature T = {temperature:.4g} "
                          "(softmax(logits / T)); the uncalibrated ones are raw_score in infer.json")
    try:
        results = classify_files(predictor, files, inf["topk"], temperature=temperature)
    except ImageReadError as e:  # a file that is not an image
        raise ConfigError(f"Infer.images: {e}") from None
    for r in results:
        print(format_result(r), flush=True)

    out = inf["output"] or run_dir(cfg)
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, INFER_JSON), {"model": predictor.prefix, "backend": predictor.backend_name,
                                                 "source_weights": (predictor.meta or {}).get("source_weights"),
                                                 "temperature": temperature, "results": results})
    shown = results[:inf["grid_images"]]
    if shown:
        png = save_prediction_grid(
            os.path.join(out, INFER_GRID), [rgb_file(r["path"]) for r in shown],
            [r["topk"][0]["class_id"] for r in shown], class_names=predictor.labels,
            probs=[r["topk"][0]["score"] for r in shown], ncols=6, scale=2.4,  # large enough to see, named
            captions=[os.path.basename(r["path"]) for r in shown],
            metadata=source_metadata((predictor.meta or {}).get("source_weights"), predictor.prefix))
        get_logger().info(f"prediction grid: {png}")
    get_logger().info(f"predictions: {os.path.join(out, INFER_JSON)}")
    return results
