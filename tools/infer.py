"""Classify image files or folders with an exported model through Paddle Inference (oneDNN on CPU, the GPU
when present); prints the top-k classes per image and writes ``infer.json`` and ``infer_predictions.png``.

    python tools/infer.py -c configs/quickstart.yaml -o Infer.images=[photo.png,more_images/]
    (-o Infer.model=exported prefix or folder; default <run dir>/inference, written by tools/export.py)
"""
import sys

import _common  # noqa: F401  (sys.path and OMP_NUM_THREADS, before paddle is imported)
from ppvit.engine.cli import main

if __name__ == "__main__":
    sys.exit(main("infer"))
