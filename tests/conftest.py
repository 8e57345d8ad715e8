import contextlib
import os

import numpy as np

from ppvit.utils.quiet import tune_cpu_math

tune_cpu_math()  # as the tools do, before Paddle is imported (MKL's AVX2 kernels on AMD CPUs)
import paddle  # noqa: E402
import pytest

# the repository root is on sys.path through pyproject.toml's [tool.pytest.ini_options] pythonpath
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

paddle.set_device("cpu")

# pytest-xdist runs test files in parallel processes, and several of them start paddle.distributed.launch jobs:
# each worker's jobs get their own ranks' ports and gloo port (PADDLE_START_PORT / PADDLE_GLOO_PORT, which the
# launcher reads as --start_port / --gloo_port), so two jobs started at once never bind the same ones
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
if _WORKER.startswith("gw") and _WORKER[2:].isdigit():
    os.environ.setdefault("PADDLE_START_PORT", str(21000 + 100 * int(_WORKER[2:])))
    os.environ.setdefault("PADDLE_GLOO_PORT", str(23000 + 100 * int(_WORKER[2:])))


@pytest.fixture(autouse=True)
def _seed():
    paddle.seed(0)
    np.random.seed(0)
    yield


@contextlib.contextmanager
def fast_init():
    """Build models whose weights' values do not matter (shapes, counts, the API surface) in a fraction of the
    time: Paddle's random initializers draw ~5M values/s on this CPU (a full-size 199M-parameter model takes ~40 s).
    Inside the context every random initializer fills its parameter with a fixed pool of uniform values in
    [-0.05, 0.05), tiled; constants keep Paddle's own fill."""
    from paddle.nn.initializer import Constant, Initializer

    original = Initializer.__call__
    pool = np.random.default_rng(0).uniform(-0.05, 0.05, size=1 << 20 | 7).astype("float32")  # odd length

    def numpy_fill(self, param, block=None):
        if isinstance(self, Constant) or not paddle.in_dynamic_mode():
            return original(self, param, block)
        values = np.resize(pool, [int(s) for s in param.shape])  # the pool tiled: memcpy speed
        paddle.to_tensor(values, dtype=param.dtype)._share_underline_tensor_to(param)
        return None

    Initializer.__call__ = numpy_fill
    try:
        yield
    finally:
        Initializer.__call__ = original
