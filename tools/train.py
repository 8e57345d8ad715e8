"""Train a model from a YAML config.

    python tools/train.py -c configs/quickstart.yaml [-o Section.key=value ...]
    python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c configs/...   # several devices
    python tools/train.py -c configs/quickstart.yaml -o Global.checkpoints=output/quickstart  # resume
"""
import sys

import _common  # noqa: F401  (sys.path and OMP_NUM_THREADS, before paddle is imported)
from ppvit.engine.cli import main

if __name__ == "__main__":
    sys.exit(main("train"))
