"""Evaluate weights on the test split: loss, top-1, top-5, per-class accuracy, confusion matrix PNG.

    python tools/eval.py -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/best_model.pdparams
    (without Global.pretrained_model: the run's best_model.pdparams)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))  # a clean clone, as PaddleClas
from ppvit.commands.cli import tool_main  # noqa: E402  (sets OMP_NUM_THREADS before Paddle is imported)

if __name__ == "__main__":
    sys.exit(tool_main("eval"))
