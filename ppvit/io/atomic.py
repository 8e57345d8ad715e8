"""Atomic file writes: a temp file in the same folder, then one rename, so a kill at any moment leaves the
previous file intact. Text and strict JSON (NaN/Infinity refused, as JSON has no such values) go through here."""
import contextlib
import json
import os
import tempfile

__all__ = ["atomic_path", "write_text", "write_json"]


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


def write_text(path, text):
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
    return os.fspath(path)


def write_json(path, data, indent=1):
    """Write ``data`` as strict JSON (UTF-8, non-ASCII kept as is, a final newline), atomically. Raises
    ``ValueError`` (before anything is written) when it holds NaN or an infinity, which JSON cannot represent."""
    return write_text(path, json.dumps(data, indent=indent, allow_nan=False, ensure_ascii=False) + "\n")
