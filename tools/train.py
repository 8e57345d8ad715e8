"""Train a model from a YAML config.

    python tools/train.py -c configs/quickstart.yaml [-o Section.key=value ...]
    python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c configs/...   # several devices
    python tools/train.py -c configs/quickstart.yaml -o Global.checkpoints=output/quickstart  # resume
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))  # a clean clone, as PaddleClas
from ppvit.commands.cli import tool_main  # noqa: E402  (sets OMP_NUM_THREADS before Paddle is imported)

if __name__ == "__main__":
    sys.exit(tool_main("train"))
