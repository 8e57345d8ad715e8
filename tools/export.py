"""Export weights for Paddle Inference: the program, its parameters and a JSON of preprocessing and labels
(``<run dir>/inference/inference.{json,pdiparams,meta.json}``), plus ONNX where paddle2onnx is installed.

    python tools/export.py -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/best_model.pdparams
    (-o Export.output=folder to write elsewhere; without Global.pretrained_model: the run's best_model.pdparams)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))  # a clean clone, as PaddleClas
from ppvit.commands.cli import tool_main  # noqa: E402  (sets OMP_NUM_THREADS before Paddle is imported)

if __name__ == "__main__":
    sys.exit(tool_main("export"))
