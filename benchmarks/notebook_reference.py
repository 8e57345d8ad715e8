"""The notebooks' own code, for the benchmarks to time against: the transcriptions that the parity tests keep
in ``tests/reference/`` (one copy in the repository), loaded here by file path so the benchmarks neither edit
``sys.path`` nor import the test suite's helpers.

    from notebook_reference import load_notebook
    nb = load_notebook("nb004_dilateformer")   # tests/reference/nb004_dilateformer.py as a module
"""
import importlib.util
import os

REFERENCE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "reference")


def load_notebook(name):
    """The module ``tests/reference/<name>.py`` (a transcribed notebook: it imports paddle and numpy only)."""
    path = os.path.join(REFERENCE_DIR, name + ".py")
    spec = importlib.util.spec_from_file_location(f"notebook_reference.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
