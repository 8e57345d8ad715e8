"""Which weights an output came from. Everything ppvit derives from a weight file (an exported model,
``eval.json``, ``explain/explain.json``, ``infer.json``) records the file's path and SHA-256, and no tool
serves an exported model whose source weights have changed since it was exported."""
import hashlib
import logging
import os

from .weights import CheckpointError

logger = logging.getLogger("ppvit")


def sha256_file(path, chunk=1 << 22):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def weights_record(path):
    """``{"path" (absolute), "size", "mtime", "sha256"}`` of a weight file; None when ``path`` is not a file."""
    if not path or not os.path.isfile(path):
        return None
    st = os.stat(path)
    return {"path": os.path.abspath(path), "size": st.st_size, "mtime": st.st_mtime, "sha256": sha256_file(path)}


def source_metadata(record, exported=None):
    """PNG text chunks naming the weights (and the exported model) a figure's predictions came from."""
    if not record and not exported:
        return None
    text = f"weights {record['path']} sha256 {record['sha256']}" if record else "weights unknown"
    return {"Source": text + (f" (exported model {exported})" if exported else "")}


def check_export_current(prefix, meta, key="the exported model"):
    """Refuse an export whose source weights changed after it was exported.

    ``meta``: the export's ``.meta.json``; its ``source_weights`` record (path + sha256) decides (an export of
    a model held only in memory has none: nothing to check). A source that no longer exists cannot be checked
    (logged). Raises ``CheckpointError``.
    """
    meta = meta or {}
    record = meta.get("source_weights") or {}
    path = record.get("path")
    if not path or not record.get("sha256"):
        return
    folder = os.path.dirname(prefix) or "."
    fix = (f"export it again (tools/export.py -c CONFIG -o Global.pretrained_model={path} -o Export.output={folder}) "
           "or serve the weights it was made from")
    if not os.path.isfile(path):
        logger.warning(f"{key}: {prefix} was exported from {path}, which no longer exists; cannot check that the "
                       "export is current")
        return
    now = sha256_file(path)
    if now != record["sha256"]:
        raise CheckpointError(f"{key}: {prefix} was exported from {path} (sha256 {record['sha256'][:12]}), which "
                              f"has changed since (now {now[:12]}): the export is stale; {fix}")
