"""Imported first by the ``ppvit`` command (and so by ``tools/*.py``), before anything imports Paddle:

- sets ``OMP_NUM_THREADS`` to the usable cores, because Paddle's CPU kernels use one thread otherwise
  (a value the user, or paddle.distributed.launch, set is kept);
- imports Paddle once with two import-time notices filtered out (see below).

Library code never does this: ``import ppvit`` leaves the environment and stderr alone.
"""
import os
import sys

if "OMP_NUM_THREADS" not in os.environ:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    os.environ["OMP_NUM_THREADS"] = str(cores or 1)

# Paddle's import prints two notices that would greet every run: a ccache hint meant for building C++
# extensions, and a caution against OMP_NUM_THREADS > 1 aimed at data-parallel OpenBLAS builds (this wheel
# uses MKL, and the thread count above is what makes its CPU kernels fast). Import it once with those
# filtered out; anything else it writes is passed through.
import contextlib  # noqa: E402
import io  # noqa: E402
import warnings  # noqa: E402

_NOTICES = ("No ccache found", "OMP_NUM_THREADS set to", "PLEASE USE OMP_NUM_THREADS WISELY", "warnings.warn(")
if "paddle" not in sys.modules:
    _buffer = io.StringIO()
    with contextlib.redirect_stderr(_buffer):
        import paddle  # noqa: E402,F401
    for _line in _buffer.getvalue().splitlines():
        if not any(n in _line for n in _NOTICES):
            print(_line, file=sys.stderr)
# paddle.nn.BatchNorm notes on every training step that it tracks running statistics, which is expected
warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
