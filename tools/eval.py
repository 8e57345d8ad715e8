"""Evaluate weights on the test split: loss, top-1, top-5, per-class accuracy, confusion matrix PNG.

    python tools/eval.py -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/best_model.pdparams
    (without Global.pretrained_model: the run's best_model.pdparams)
"""
import sys

import _common  # noqa: F401  (sys.path and OMP_NUM_THREADS, before paddle is imported)
from ppvit.engine.cli import main

if __name__ == "__main__":
    sys.exit(main("eval"))
