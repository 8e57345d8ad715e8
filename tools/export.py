"""Export weights for Paddle Inference: the program, its parameters and a JSON of preprocessing and labels
(``<run dir>/inference/inference.{json,pdiparams,meta.json}``), plus ONNX where paddle2onnx is installed.

    python tools/export.py -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/best_model.pdparams
    (-o Export.output=folder to write elsewhere; without Global.pretrained_model: the run's best_model.pdparams)
"""
import sys

import _common  # noqa: F401  (sys.path and OMP_NUM_THREADS, before paddle is imported)
from ppvit.engine.cli import main

if __name__ == "__main__":
    sys.exit(main("export"))
