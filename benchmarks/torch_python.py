"""Where the benchmarks find PyTorch: ``--torch-python PYTHON`` or the environment variable
``PPVIT_TORCH_PYTHON``, a Python with torch and ppvit's dependencies (docs/benchmarks.md says how to make
that venv). When torch does not import in the running Python, the benchmark runs again under that one, with
the same arguments; without either, the PyTorch comparisons are skipped with a message.
"""
import argparse
import os
import sys

ENV = "PPVIT_TORCH_PYTHON"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HELP = (f"a Python with torch and ppvit's dependencies for the PyTorch comparison (default: ${ENV}); the "
        "benchmark runs again under it when torch does not import here")
MISSING = f"torch is not importable in this Python; give --torch-python PYTHON or set {ENV} (docs/benchmarks.md)"


def add_argument(parser, help=HELP):
    parser.add_argument("--torch-python", default=os.environ.get(ENV) or None, metavar="PYTHON", help=help)


def run_under_torch_python(argv=None):
    """Re-run this script under ``--torch-python`` / ``$PPVIT_TORCH_PYTHON`` when torch does not import here
    (call before Paddle or torch is imported). Returns when there is nothing to switch to."""
    parser = argparse.ArgumentParser(add_help=False)
    add_argument(parser)
    args, _ = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not args.torch_python or os.environ.get("_PPVIT_TORCH_PYTHON_RUN"):
        return
    try:
        import torch  # noqa: F401
        return
    except ImportError:
        pass
    python = args.torch_python
    if not os.path.isfile(python) or not os.access(python, os.X_OK):
        print(f"error: --torch-python / {ENV}: {python} is not an executable Python; make the venv as "
              "docs/benchmarks.md says, or leave the option out to skip the PyTorch comparison", file=sys.stderr)
        sys.exit(2)
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, _PPVIT_TORCH_PYTHON_RUN="1",
               PYTHONPATH=ROOT + (os.pathsep + path if path else ""))
    print(f"running under {python} (PyTorch)", flush=True)
    os.execve(python, [python, os.path.abspath(sys.argv[0])] + sys.argv[1:], env)
