"""Reading and writing weight files: ``.pdparams`` (pickle; trusted files only) and ``.safetensors``
(no pickle: safe for downloads). Every write is atomic: a temp file in the same folder, then a rename,
so a kill at any moment leaves the previous file intact."""
import contextlib
import os
import tempfile

import numpy as np
import paddle

from .errors import PpvitError


class CheckpointError(PpvitError):
    """A weight file that cannot be used: missing, unreadable, or not matching the model."""


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside ``path``; on success it replaces ``path`` in one rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    # mkstemp creates 0600 files; give the result the usual permissions (0666 minus the umask)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _to_numpy(v):
    if isinstance(v, paddle.Tensor):
        return v.numpy()
    return np.asarray(v)


def save_state(state, path):
    """Save a flat ``{name: tensor}`` dict (or a nested pdparams/pdopt object) atomically."""
    path = os.fspath(path)
    with atomic_path(path) as tmp:
        if path.endswith(".safetensors"):
            from safetensors.numpy import save_file

            save_file({k: np.ascontiguousarray(_to_numpy(v)) for k, v in state.items()}, tmp)
        else:
            paddle.save(state, tmp)


def load_state(path):
    """Load a weight file into a ``{name: numpy array}`` dict, with one clear error on any failure."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"weight file not found: {path}")
    try:
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            state = load_file(path)
        else:
            state = paddle.load(path, return_numpy=True)
    except Exception as e:  # truncated or foreign files raise many different errors
        raise CheckpointError(
            f"cannot read weight file {path} ({type(e).__name__}: {e}); it may be truncated or not a "
            "Paddle/safetensors state dict"
        ) from None
    if not isinstance(state, dict) or not all(hasattr(v, "shape") for v in state.values()):
        raise CheckpointError(f"{path} does not hold a flat state dict of tensors")
    return {k: np.asarray(v) for k, v in state.items()}
