"""Atomic file writes: a temp file in the same folder, then one rename, so a kill at any moment leaves the
previous file intact. Text and strict JSON (a NaN or infinity is written as null: JSON has neither) go through here."""
import contextlib
import json
import math
import os
import tempfile

__all__ = ["atomic_path", "current_umask", "finite_or_null", "strict_json", "write_text", "write_json"]


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temp path beside ``path``; on success it replaces ``path`` in one rename."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        yield tmp
        # mkstemp creates 0600 files, and some writers (safetensors) replace the file with one of their own:
        # the result gets the usual permissions, 0666 minus the umask, whoever made it
        os.chmod(tmp, 0o666 & ~current_umask())
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def current_umask():
    """The process's umask: from /proc/self/status on Linux (no change, so no race with other threads), else
    by setting it and setting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return os.fspath(path)


def finite_or_null(obj):
    """``obj`` with every NaN or infinite float replaced by None (JSON's null), recursively (numpy scalars
    and arrays become plain numbers and lists)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_null(v) for v in obj]
    if hasattr(obj, "dtype") and hasattr(obj, "tolist"):
        return finite_or_null(obj.tolist())
    return obj


def strict_json(data, indent=1):
    """Strict JSON text: JSON has no NaN or Infinity (Python's json writes them, other readers reject them),
    so a non-finite number is written as null."""
    return json.dumps(finite_or_null(data), indent=indent, allow_nan=False)


def write_json(path, data, indent=1):
    """Write ``data`` as strict JSON (a non-finite number as null), atomically."""
    return write_text(path, strict_json(data, indent=indent))
