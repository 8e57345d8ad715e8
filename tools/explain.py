"""LIME explanations (image | superpixels | explanation side by side, one PNG per image) for test images or
image files; written to ``<run dir>/explain/`` (or Explain.output).

    python tools/explain.py -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/best_model.pdparams -o Explain.indices=[0,3]
    python tools/explain.py -c configs/quickstart.yaml -o Explain.images=[photo.png] -o Explain.use_predictor=true
    python tools/explain.py -c configs/quickstart.yaml -o Explain.model=output/quickstart/inference   # exported
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))  # a clean clone, as PaddleClas
from ppvit.commands.cli import tool_main  # noqa: E402  (sets OMP_NUM_THREADS before Paddle is imported)

if __name__ == "__main__":
    sys.exit(tool_main("explain"))
