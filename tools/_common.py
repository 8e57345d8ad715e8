"""Imported first by every tool: puts the repository on ``sys.path`` (so the tools run from a clean
checkout) and sets ``OMP_NUM_THREADS`` to the usable cores before Paddle is imported, because Paddle's CPU
kernels use one thread otherwise. A value the user (or paddle.distributed.launch) set is kept."""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

if "OMP_NUM_THREADS" not in os.environ:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ["OMP_NUM_THREADS"] = str(cores or 1)
