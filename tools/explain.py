"""LIME explanations (image | superpixels | explanation side by side, one PNG per image) for test images or
image files; written to ``<run dir>/explain/`` (or Explain.output).

    python tools/explain.py -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/best_model.pdparams -o Explain.indices=[0,3]
    python tools/explain.py -c configs/quickstart.yaml -o Explain.images=[photo.png] -o Explain.use_predictor=true
    python tools/explain.py -c configs/quickstart.yaml -o Explain.model=output/quickstart/inference   # exported
"""
import sys

import _common  # noqa: F401  (sys.path and OMP_NUM_THREADS, before paddle is imported)
from ppvit.engine.cli import main

if __name__ == "__main__":
    sys.exit(main("explain"))
