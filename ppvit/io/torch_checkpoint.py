"""Reading PyTorch checkpoints (``.pth``/``.pth.tar``/``.pt``) and ``.safetensors`` files in the PyTorch
layout into ``{name: np.ndarray}``, for the converter (``ppvit.commands.convert``).

A ``.safetensors`` file is read with numpy alone. A ``.pth`` file is read without torch: PyTorch's zip format
(torch >= 1.6) by ``read_torch_zip``, the legacy format by ``read_torch_legacy``, both with a restricted
unpickler + numpy, so nothing in the file can run code (only tensors and plain containers are rebuilt; any
other object becomes an inert placeholder). ``reader="torch"`` uses ``torch.load(weights_only=True)`` instead,
importing torch there. Whole training checkpoints are unwrapped (``ppvit.io.unwrap_state_dict``).
"""
import os
import pickle
import zipfile
from collections import OrderedDict

import numpy as np

from .weights import CheckpointError, unwrap_state_dict

__all__ = ["ConversionError", "read_checkpoint", "read_torch_zip", "read_torch_legacy"]


class ConversionError(CheckpointError):
    """A source file that cannot become weights of the requested model (the message says why)."""


# --------------------------------------------------------------------------------------------------------
# reading PyTorch checkpoints without torch
# --------------------------------------------------------------------------------------------------------
_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class _StorageType:
    def __init__(self, name):
        self.name = name


class _Opaque(dict):
    """Stand-in for any non-tensor object of a training checkpoint (``argparse.Namespace``, optimizer
    classes, ...): built without importing or calling the real class, so loading cannot run code."""

    def __new__(cls, *args, **kwargs):
        return dict.__new__(cls)

    def __init__(self, *args, **kwargs):
        super().__init__()

    def __setstate__(self, state):
        self["__state__"] = state

    def append(self, item):
        self.setdefault("__items__", []).append(item)

    def extend(self, items):
        self.setdefault("__items__", []).extend(items)


def _tensor_from_storage(storage, storage_offset, size, stride):
    # as_strided does no bounds checks: a corrupt or crafted file must not make it read past the storage
    size, stride = tuple(int(n) for n in size), tuple(int(s) for s in stride)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride) if n > 0)
    if (storage_offset < 0 or any(s < 0 for s in stride) or len(size) != len(stride) or any(n < 0 for n in size)
            or (all(n > 0 for n in size) and last >= storage.size)):
        raise ConversionError(f"a tensor of shape {size} lies outside its storage ({storage.size} elements): "
                              "the file is corrupt")
    if len(size) == 0:
        return np.array(storage[storage_offset])  # 0-d array (e.g. num_batches_tracked)
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(storage[storage_offset:], shape=tuple(size),
                                           strides=tuple(s * item for s in stride))
    return np.ascontiguousarray(view)


class _PendingStorage:
    """A storage of the legacy format, whose bytes follow the pickle (filled in after it is read); old
    files may also point at a slice (``root``, ``offset`` in elements) of another storage."""

    def __init__(self, type_name, root=None, offset=0):
        self.type_name, self.root, self.offset, self._data = type_name, root, offset, None

    @property
    def data(self):
        return self.root.data if self.root is not None else self._data


class _PendingTensor:
    def __init__(self, storage, storage_offset, size, stride):
        self.args = (storage, storage_offset, size, stride)

    def resolve(self):
        storage, offset, size, stride = self.args
        return _tensor_from_storage(storage.data, storage.offset + offset, size, stride)


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    """torch._utils._rebuild_tensor_v2: a strided view of a storage, copied to a dense array."""
    if isinstance(storage, _PendingStorage):
        return _PendingTensor(storage, storage_offset, size, stride)
    return _tensor_from_storage(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):
    return data


def _rebuild_from_type(func, new_type, args, state):
    return func(*args)


_ALLOWED = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
}


class _TorchUnpickler(pickle.Unpickler):
    def __init__(self, file, load_storage):
        super().__init__(file)
        self._load_storage = load_storage

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        # anything else is rebuilt as an inert placeholder named after the class it stands for
        return type(f"{module}.{name}", (_Opaque,), {})

    def persistent_load(self, pid):
        # zip format: ('storage', storage type, key, location, numel); legacy: + view metadata
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        storage_type, key = pid[1], pid[2]
        name = storage_type.name if isinstance(storage_type, _StorageType) else type(storage_type).__name__
        view = pid[5] if len(pid) > 5 else None
        return self._load_storage(name, str(key), view)


class _PlainUnpickler(pickle.Unpickler):
    """For the legacy format's header pickles: plain values only."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a checkpoint header")


def _dtype(type_name, byteorder):
    if type_name not in _STORAGE_DTYPES:
        raise ConversionError(f"unsupported tensor storage type {type_name}")
    dtype = _STORAGE_DTYPES[type_name]
    order = "<" if byteorder == "little" else ">"
    if dtype == "bfloat16":
        return np.dtype(order + "u2"), True
    return np.dtype(dtype).newbyteorder(order), False


def _to_array(raw, type_name, byteorder):
    dt, bf16 = _dtype(type_name, byteorder)
    arr = np.frombuffer(raw, dtype=dt)
    if bf16:  # numpy has no bfloat16: widen to float32 (the upper 16 bits of a float32)
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(dt.newbyteorder("="), copy=False)


def _resolve(obj):
    """Replace the legacy format's pending tensors by arrays, through containers."""
    if isinstance(obj, _PendingTensor):
        return obj.resolve()
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _resolve(obj[k])
        return obj
    if isinstance(obj, list):
        return [_resolve(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_resolve(v) for v in obj)
    return obj


def read_torch_zip(path):
    """Load a ``torch.save`` zip file (torch >= 1.6) with numpy only. Returns the saved object with every
    tensor as an ``np.ndarray`` (bfloat16 widened to float32)."""
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        pkl = [n for n in names if n.endswith("data.pkl")]
        if not pkl:
            raise ConversionError(f"{path} is a zip file but not a PyTorch checkpoint (no data.pkl)")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = "little"
        if prefix + "byteorder" in names:
            byteorder = zf.read(prefix + "byteorder").decode().strip()
        cache = {}

        def load_storage(type_name, key, view):
            if key not in cache:
                cache[key] = _to_array(zf.read(f"{prefix}data/{key}"), type_name, byteorder)
            return cache[key]

        with zf.open(pkl[0]) as f:
            return _TorchUnpickler(f, load_storage).load()


_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def read_torch_legacy(path):
    """Load a file of PyTorch's legacy (pre-1.6, ``_use_new_zipfile_serialization=False``) format with
    numpy only: header pickles, the object pickle, the storage keys, then each storage's bytes."""
    with open(path, "rb") as f:
        if _PlainUnpickler(f).load() != _LEGACY_MAGIC:
            raise ConversionError(f"{path} is not a PyTorch checkpoint (bad magic number)")
        _PlainUnpickler(f).load()  # protocol version
        sys_info = _PlainUnpickler(f).load()
        byteorder = "little" if sys_info.get("little_endian", True) else "big"
        storages = {}

        def load_storage(type_name, key, view):
            root = storages.setdefault(key, _PendingStorage(type_name))
            if view is None:
                return root
            _, offset, _ = view  # (view key, offset in elements, size)
            return _PendingStorage(type_name, root, offset)

        obj = _TorchUnpickler(f, load_storage).load()
        for key in _PlainUnpickler(f).load():
            dt, _ = _dtype(storages[key].type_name, byteorder)
            numel = int.from_bytes(f.read(8), byteorder)
            raw = f.read(numel * dt.itemsize)
            if len(raw) != numel * dt.itemsize:
                raise ConversionError(f"{path} ends inside tensor data: it is truncated")
            storages[key]._data = _to_array(raw, storages[key].type_name, byteorder)
    return _resolve(obj)


def _read_with_torch(path):
    """``reader="torch"``: torch's own loader, imported only here (torch is not a ppvit dependency)."""
    try:
        import torch
    except ImportError:
        raise ConversionError("--reader torch needs PyTorch (pip install torch); the default reader "
                              "reads .pth files without it") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - many different errors for foreign/corrupt files
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ConversionError(f"torch cannot read {path} ({type(e).__name__}: {first}); the default "
                              "builtin reader also reads whole training checkpoints, safely") from None

    def to_numpy(o):
        if isinstance(o, torch.Tensor):
            t = o.detach().cpu()
            return (t.float() if t.dtype == torch.bfloat16 else t).numpy()
        if isinstance(o, dict):
            return type(o)((k, to_numpy(v)) for k, v in o.items()) if isinstance(o, OrderedDict) \
                else {k: to_numpy(v) for k, v in o.items()}
        return o

    return to_numpy(obj)


def _flat_state(obj, path):
    """The {name: array} weights inside a loaded object (unwrapping ``{'model': ...}`` and the like)."""
    obj = unwrap_state_dict(obj)
    if not isinstance(obj, dict):
        raise ConversionError(f"{path} holds a {type(obj).__name__}, not a state dict")
    state = {k: v for k, v in obj.items() if isinstance(v, np.ndarray)}
    if not state:
        raise ConversionError(f"{path} holds no tensors (top-level keys: {', '.join(map(str, obj))})")
    return state


def read_checkpoint(path, reader="auto"):
    """Read a PyTorch ``.pth``/``.pth.tar`` or a ``.safetensors`` file into {name: np.ndarray}.

    reader: ``auto``/``builtin``: the torch-free readers (zip and legacy formats); ``torch``:
        ``torch.load(weights_only=True)``, which needs torch.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConversionError(f"source file not found: {path}")
    if path.endswith(".safetensors"):
        try:
            return _read_safetensors(path)
        except ConversionError:
            raise
        except Exception as e:  # noqa: BLE001 - truncated or foreign files
            raise ConversionError(f"cannot read {path} as safetensors ({type(e).__name__}: {e}); "
                                  "it may be truncated") from None
    if reader not in ("auto", "builtin", "torch"):
        raise ConversionError(f"unknown reader {reader!r}: use builtin or torch")
    if reader == "torch":
        obj = _read_with_torch(path)
    else:
        if zipfile.is_zipfile(path):
            read = read_torch_zip
        elif _looks_like_legacy_torch(path):
            read = read_torch_legacy
        else:
            raise ConversionError(f"cannot read {path}: not a PyTorch checkpoint (neither a torch.save zip "
                                  "file nor the legacy format), or truncated")
        try:
            obj = read(path)
        except ConversionError:
            raise
        except Exception as e:  # noqa: BLE001 - corrupt files raise many kinds of errors
            raise ConversionError(f"cannot read {path} ({type(e).__name__}: {e}); it may be truncated") from None
    return _flat_state(obj, path)


def _read_safetensors(path):
    """safetensors' numpy loader, plus bfloat16 (which numpy lacks: widened to float32)."""
    import json
    import struct

    from safetensors.numpy import load_file

    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n)) if n < 100_000_000 else {}
        if not any(isinstance(v, dict) and v.get("dtype") == "BF16" for v in header.values()):
            return load_file(path)
        body = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        start, end = info["data_offsets"]
        if not 0 <= start <= end <= len(body):
            raise ConversionError(f"{path}: tensor {name} lies outside the file: it is truncated")
        raw = body[start:end]
        if info["dtype"] == "BF16":
            arr = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            dt = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
                  "I8": "i1", "U8": "u1", "BOOL": "?"}[info["dtype"]]
            arr = np.frombuffer(raw, dt)
        out[name] = arr.reshape(info["shape"]).copy()
    return out


def _looks_like_legacy_torch(path):
    """Legacy torch files start with a pickled magic number (protocol 2: b'\\x80\\x02')."""
    with open(path, "rb") as f:
        return f.read(2) == b"\x80\x02"
