"""Classify image files or folders with an exported model through Paddle Inference (oneDNN on CPU, the GPU
when present); prints the top-k classes per image and writes ``infer.json`` and ``infer_predictions.png``.

    python tools/infer.py -c configs/quickstart.yaml -o Infer.images=[photo.png,more_images/]
    (-o Infer.model=exported prefix or folder; default <run dir>/inference, written by tools/export.py)
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))  # a clean clone, as PaddleClas
from ppvit.commands.cli import tool_main  # noqa: E402  (sets OMP_NUM_THREADS before Paddle is imported)

if __name__ == "__main__":
    sys.exit(tool_main("infer"))
