"""A local web app (Gradio, offline) over a run's exported model: upload or pick images, see the top-k classes
and LIME and Grad-CAM explanations with their faithfulness. Needs ``pip install '.[app]'``.

    python tools/export.py -c configs/quickstart.yaml
    python tools/app.py -c configs/quickstart.yaml                  # http://127.0.0.1:7860
    python tools/app.py -c configs/quickstart.yaml -o App.port=8080 -o App.model=output/quickstart/inference
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))  # a clean clone, as PaddleClas
from ppvit.commands.cli import tool_main  # noqa: E402  (sets OMP_NUM_THREADS before Paddle is imported)

if __name__ == "__main__":
    sys.exit(tool_main("app"))
