import os

import numpy as np
import paddle
import pytest

# the repository root is on sys.path through pyproject.toml's [tool.pytest.ini_options] pythonpath
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")

paddle.set_device("cpu")


@pytest.fixture(autouse=True)
def _seed():
    paddle.seed(0)
    np.random.seed(0)
    yield
