"""Write a ``torch.save``-format (zip) checkpoint without torch, for tests of the commands that convert
official downloads. Test-only: it emits the same pickle opcodes torch does (``_rebuild_tensor_v2`` over
storages kept in ``archive/data/<key>``), through stand-in ``torch`` modules that exist only while pickling."""
import collections
import contextlib
import io
import pickle
import sys
import types
import zipfile

import numpy as np

_STORAGE = {np.dtype("float32"): "FloatStorage", np.dtype("float64"): "DoubleStorage",
            np.dtype("int64"): "LongStorage", np.dtype("float16"): "HalfStorage"}


@contextlib.contextmanager
def _stand_in_torch():
    saved = {k: sys.modules.get(k) for k in ("torch", "torch._utils")}
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name is pickled
        raise AssertionError

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in _STORAGE.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    sys.modules.update({"torch": torch, "torch._utils": utils})
    try:
        yield torch, utils
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


class _Tensor:
    def __init__(self, key, array, torch, utils):
        self.key, self.array, self.torch, self.utils = key, array, torch, utils

    def __reduce__(self):
        a = self.array
        stride = tuple(s // a.itemsize for s in a.strides) if a.ndim else ()
        storage = ("storage", getattr(self.torch, _STORAGE[a.dtype]), self.key, "cpu", a.size)
        return (self.utils._rebuild_tensor_v2,
                (_Storage(storage), 0, tuple(a.shape), stride, False, collections.OrderedDict()))


class _Storage:
    def __init__(self, pid):
        self.pid = pid


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Storage) else None


def save_torch_zip(state, path):
    """Save ``{name: np.ndarray}`` as PyTorch's zip checkpoint format."""
    arrays = {k: np.ascontiguousarray(v) for k, v in state.items()}
    buf = io.BytesIO()
    with _stand_in_torch() as (torch, utils):
        obj = collections.OrderedDict(
            (k, _Tensor(str(i), a, torch, utils)) for i, (k, a) in enumerate(arrays.items()))
        _Pickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/byteorder", "little")
        zf.writestr("archive/version", "3\n")
        for i, a in enumerate(arrays.values()):
            zf.writestr(f"archive/data/{i}", a.tobytes())
