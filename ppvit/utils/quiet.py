"""Paddle's notices that say nothing to a ppvit user, filtered out:

- ``quiet_paddle_import``: a quiet Paddle import for programs (the ``ppvit`` command, notebooks, benchmarks), not
  for the library: ``import ppvit`` leaves the environment and stderr alone.

      from ppvit.utils import quiet_paddle_import
      quiet_paddle_import()   # first thing, before anything imports paddle

- ``drop_stderr_lines``: a block during which given lines written to the process's stderr, by C++ (glog) too,
  are dropped and the others passed on.
- ``without_paddle_notices``: a call whose Python-level stderr notices (Paddle's "Modified FLAGS detected"
  block of every distributed start) are dropped.
- ``paddle_error_summary``: one short clause for an exception Paddle's C++ raised (``(InvalidArgument) ...
  [Hint: ...] (at /paddle/...)``), for messages that report it rather than show it.
"""
import contextlib
import io
import os
import sys
import tempfile
import warnings

__all__ = ["quiet_paddle_import", "drop_stderr_lines", "without_paddle_notices", "paddle_error_summary",
           "tune_cpu_math", "keep_freed_memory", "PADDLE_IMPORT_NOTICES", "PADDLE_EXPORT_NOTICES", "PADDLE_LOG_LEVEL"]

# Paddle's import prints two notices that would greet every run: a ccache hint meant for building C++
# extensions, and a caution against OMP_NUM_THREADS > 1 aimed at data-parallel OpenBLAS builds (this wheel
# uses MKL, and the thread count set here is what makes its CPU kernels fast).
PADDLE_IMPORT_NOTICES = ("No ccache found", "OMP_NUM_THREADS set to", "PLEASE USE OMP_NUM_THREADS WISELY",
                         "warnings.warn(")


# glog's minimum level for Paddle's C++ log lines: 1 drops the INFO lines (``I1206 ... Hardware support for
# BFLOAT16 is enabled`` on every bf16 run, the tcp_store/tcp_utils lines of every distributed start, oneDNN
# kernel notes) and keeps warnings and errors. A GLOG_minloglevel the user set is kept.
PADDLE_LOG_LEVEL = "1"


def _cpuinfo_field(name):
    """The value of the first ``name`` line of /proc/cpuinfo (stripped), or "" where there is none."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(name):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def cpu_vendor():
    """The CPU's vendor string from /proc/cpuinfo (``GenuineIntel``, ``AuthenticAMD``, ...), or "" elsewhere."""
    return _cpuinfo_field("vendor_id")


def cpu_flags():
    """The CPU feature flags /proc/cpuinfo lists (a set; empty where there is no /proc/cpuinfo)."""
    return set(_cpuinfo_field("flags").split())


# glibc malloc: blocks up to 32 MiB from the heap (not a fresh mmap each), and up to 256 MiB of freed heap kept
MALLOC_MMAP_THRESHOLD = 32 << 20
MALLOC_TRIM_THRESHOLD = 256 << 20
_malloc_tuned = []


def keep_freed_memory():
    """Let glibc reuse freed activation memory instead of returning it to the kernel; once per process.

    Paddle (dygraph and Paddle Inference, on CPU) allocates every activation and gradient with malloc and frees
    it after use. A batch-64 activation of these models is 4-16 MB, above glibc's mmap threshold (128 KiB,
    raised only by what the process happened to free before), so each one was a fresh mmap, zero-filled page by
    page on first write, and unmapped at free (measured, 2-core AMD EPYC: convmixer_256_8's bf16 predictor
    ~300 -> ~850 images/s, fp32 ~180 -> ~450; its batch-64 training step 3.1 -> 1.8 s; a [64, 256, 16, 16]
    addition 20 -> 1.5 ms). ``import ppvit`` calls this (``tune_cpu_math``). Sets
    ``M_MMAP_THRESHOLD`` to 32 MiB (glibc's maximum) and ``M_TRIM_THRESHOLD`` to 256 MiB: at most that much
    freed memory stays with the process. Returns True when set; a no-op (False) off glibc, or when the user
    tuned malloc through any ``MALLOC_*_`` variable or ``GLIBC_TUNABLES``.
    """
    if _malloc_tuned:
        return _malloc_tuned[0]
    ok = False
    if not any((k.startswith("MALLOC_") and k.endswith("_")) or k == "GLIBC_TUNABLES" for k in os.environ):
        try:
            import ctypes

            mallopt = ctypes.CDLL(None).mallopt  # glibc only: AttributeError/OSError elsewhere
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
            ok = bool(mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)) and bool(
                mallopt(m_trim_threshold, MALLOC_TRIM_THRESHOLD))
        except (AttributeError, OSError):
            ok = False
    _malloc_tuned.append(ok)
    return ok


def tune_cpu_math():
    """Environment for Paddle's CPU math, set before Paddle is imported; a value the user set is kept.

    On AMD CPUs, the MKL that Paddle's CPU wheel bundles picks its slow generic code path unless
    ``MKL_DEBUG_CPU_TYPE=5`` asks for its AVX2 kernels (measured on a 2-core AMD EPYC: a 1576x192x576 sgemm
    35 -> 11 ms, a ConViT-Ti training step 6.2 -> 3.6 s of CPU). Intel CPUs get MKL's own choice (the variable
    would cap them at AVX2), and MKL builds that no longer read it ignore it.

    Also ``keep_freed_memory``: glibc's malloc keeps freed activation memory for reuse (any time, once)."""
    if cpu_vendor() == "AuthenticAMD":
        os.environ.setdefault("MKL_DEBUG_CPU_TYPE", "5")
    keep_freed_memory()


def quiet_paddle_import(set_threads=True):
    """Import Paddle once with its import-time notices filtered out; returns the ``paddle`` module.

    - ``set_threads``: set ``OMP_NUM_THREADS`` to the usable cores when unset (a value the user, or
      ``paddle.distributed.launch``, set is kept), because Paddle's CPU matrix kernels use one thread
      otherwise; it only has an effect before Paddle is first imported.
    - Anything else Paddle writes to stderr while importing is passed through. When Paddle is already
      imported, nothing happens (its notices, if any, were printed then).
    - Paddle's C++ INFO log lines are dropped (``GLOG_minloglevel``, ``PADDLE_LOG_LEVEL``) unless the user set
      ``GLOG_minloglevel``; like the thread count, this only has an effect before Paddle is first imported (the
      processes ``paddle.distributed.launch`` starts import it through the tools, so they are quiet too).
    - ``tune_cpu_math``: MKL's AVX2 kernels on AMD CPUs (``MKL_DEBUG_CPU_TYPE``), before Paddle is imported, and
      glibc's malloc told to keep freed activations (``keep_freed_memory``).
    - Also silences paddle.nn.BatchNorm's note, on every training step, that it tracks running statistics.
    """
    os.environ.setdefault("GLOG_minloglevel", PADDLE_LOG_LEVEL)
    tune_cpu_math()
    if set_threads and "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        os.environ["OMP_NUM_THREADS"] = str(cores or 1)
    if "paddle" not in sys.modules:
        buffer = io.StringIO()
        with contextlib.redirect_stderr(buffer):
            import paddle  # noqa: F401
        for line in buffer.getvalue().splitlines():
            if not any(n in line for n in PADDLE_IMPORT_NOTICES):
                print(line, file=sys.stderr)
    warnings.filterwarnings("ignore", message="When training, we now always track global mean and variance")
    return sys.modules["paddle"]


# paddle.jit.save's to_static conversion logs this glog warning on every export (eager_utils.cc, PIR), whatever
# the model: nothing the user can act on
PADDLE_EXPORT_NOTICES = ("not support input out tensor for now",)


@contextlib.contextmanager
def drop_stderr_lines(*patterns):
    """Run the block with file descriptor 2 (stderr, where Paddle's C++ glog writes) sent to a temp file; on
    exit, pass on every line that contains none of ``patterns`` to ``sys.stderr``, in order.

    The kept lines come out when the block ends rather than as they are written, so keep blocks short (one
    Paddle call). Without a real file descriptor 2 (an embedding host), the block runs unfiltered.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            kept = [line for line in tmp.read().decode("utf-8", "replace").splitlines(True)
                    if not any(p in line for p in patterns)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


# printed by paddle.distributed.init_parallel_env to sys.stderr on every start: Paddle's own flags, set by Paddle
PADDLE_FLAGS_NOTICE = ("Modified FLAGS detected", "FLAGS(name=")


def without_paddle_notices(fn, *args, **kwargs):
    """``fn(*args, **kwargs)`` with the lines it writes to ``sys.stderr`` (Python level) passed on, except
    Paddle's "Modified FLAGS detected" block (its banner, ``FLAGS(name=...)`` lines and closing rule)."""
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stderr(buffer):
            return fn(*args, **kwargs)
    finally:
        for line in buffer.getvalue().splitlines():
            if not (any(n in line for n in PADDLE_FLAGS_NOTICE) or (line and set(line) == {"="})):
                print(line, file=sys.stderr)


def paddle_error_summary(err, limit=200):
    """``Kind: message`` for an exception from Paddle's C++ (``(InvalidArgument) The type ... [Hint: ...] (at
    /paddle/...)`` -> ``InvalidArgument: The type ...``): its first line without the hint and the source location,
    at most ``limit`` characters; any other exception as ``TypeName: first line``."""
    import re

    text = str(err).strip()
    first = text.splitlines()[0].strip() if text else ""
    match = re.match(r"^\((\w+)\)\s*(.*)$", first)
    kind, message = (match.group(1), match.group(2)) if match else (type(err).__name__, first)
    message = re.sub(r"\s*\[Hint:.*$", "", message)
    message = re.sub(r"\s*\(at /\S+\)$", "", message).strip()
    summary = f"{kind}: {message}" if message else kind
    return summary if len(summary) <= limit else summary[:limit - 3].rstrip() + "..."
