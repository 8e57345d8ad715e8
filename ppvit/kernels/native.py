"""ppvit's C kernels (csrc/cpu_kernels.c): built on this machine at first use, loaded with ctypes.

The source is plain C (no Paddle or Python headers), so it builds in about a second with the system's C compiler
(``$CC``, else ``cc``/``gcc``). It is compiled for the CPU it runs on (AVX2 + FMA when /proc/cpuinfo lists them)
and, when Paddle ships the Intel OpenMP runtime (``libiomp5``, loaded by its MKL), with OpenMP linked to that
runtime, so Paddle's matrix kernels and these loops share one thread pool and ``OMP_NUM_THREADS``.

The library is cached under ``$PPVIT_CACHE_DIR`` (default ``$XDG_CACHE_HOME/ppvit`` or ``~/.cache/ppvit``) in a
folder named by a hash of the source, the compiler's version, the flags and the CPU's features, so a home
shared by machines with different CPUs keeps one build per CPU. Builds write a temporary file and rename it, so
processes that start together (pytest-xdist, a 2-process launch) never load a half-written library. When the
cache is not writable, the build goes to a temporary folder of this process.

Nothing here is required: without a C compiler (or with a failed build), ``library()`` returns None once with
one warning and the layers run Paddle's own ops. ``PPVIT_KERNELS=0`` turns these off with the other kernels.
"""
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings

import paddle

from ..utils.quiet import cpu_flags

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "cpu_kernels.c")
ABI_VERSION = 3
_LIB_NAME = "libppvit_cpu.so"
_lock = threading.Lock()
_state = {"tried": False, "lib": None, "why": None}

_f, _i64, _int, _p = ctypes.c_float, ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
_SIGNATURES = {
    "ppvit_gelu_fwd": [_p, _p, _i64],
    "ppvit_gelu_bwd": [_p, _p, _p, _i64],
    "ppvit_ln_fwd": [_p, _p, _p, _p, _p, _p, _i64, _i64, _f],
    "ppvit_ln_bwd": [_p, _p, _p, _p, _p, _p, _p, _p, _p, _i64, _i64, _int],
    "ppvit_ln_cf_fwd": [_p, _p, _p, _p, _p, _p, _p, _i64, _i64, _i64, _f, _int],
    "ppvit_ln_cf_bwd": [_p, _p, _p, _p, _p, _p, _p, _p, _p, _i64, _i64, _i64, _int],
    "ppvit_mix_fwd": [_p, _p, _p, _p, _i64, _i64, _i64, _int],
    "ppvit_mix_bwd": [_p, _p, _p, _p, _p, _p, _p, _p, _i64, _i64, _i64, _int],
    "ppvit_bias_fwd": [_p, _p, _p, _i64, _i64, _i64],
    "ppvit_bias_bwd": [_p, _p, _p, _i64, _i64, _i64],
    "ppvit_chscale_fwd": [_p, _p, _p, _i64, _i64, _i64],
    "ppvit_chscale_bwd": [_p, _p, _p, _p, _p, _p, _i64, _i64, _i64],
    "ppvit_dw_fwd": [_p, _p, _p, _i64, _i64, _i64, _i64, _i64, _int],
    "ppvit_dw_bwd_w": [_p, _p, _p, _i64, _i64, _i64, _i64, _i64],
    "ppvit_bn_fwd": [_p, _p, _p, _p, _p, _p, _p, _i64, _i64, _i64, _f],
    "ppvit_bn_bwd": [_p, _p, _p, _p, _p, _p, _p, _p, _i64, _i64, _i64],
    "ppvit_dilate_fwd": [_p, _p, _p, _p, _p, _i64, _i64, _i64, _i64, _i64, _i64, _f],
    "ppvit_dilate_bwd": [_p, _p, _p, _p, _p, _p, _p, _p, _i64, _i64, _i64, _i64, _i64, _i64, _f],
    "ppvit_strided_copy": [_p, _p, _int, _p, _p],
    "ppvit_max_threads": [],
    "ppvit_abi_version": [],
}


def _compiler():
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    return None


def _openmp_runtime():
    """Paddle's Intel OpenMP runtime (the one its MKL uses), or None."""
    path = os.path.join(os.path.dirname(paddle.__file__), "libs", "libiomp5.so")
    return path if os.path.exists(path) else None


def _flags():
    flags = ["-O3", "-std=c99", "-fPIC", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math",
             "-fno-signed-zeros"]
    if platform.machine() in ("x86_64", "AMD64") and {"avx2", "fma"} <= cpu_flags():
        flags += ["-mavx2", "-mfma"]
    return flags


def cache_dir():
    """Where built libraries are kept: ``$PPVIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/ppvit``, else
    ``~/.cache/ppvit``."""
    if os.environ.get("PPVIT_CACHE_DIR"):
        return os.path.expanduser(os.environ["PPVIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ppvit")


def _run(cmd):
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:1])} exited with {done.returncode}: "
                           f"{(done.stderr or done.stdout).strip()[-400:]}")


def _build(cc, folder):
    """Compile SOURCE into folder/libppvit_cpu.so (OpenMP through Paddle's runtime when there is one, else none);
    returns its path."""
    os.makedirs(folder, exist_ok=True)
    target = os.path.join(folder, _LIB_NAME)
    if os.path.exists(target):
        return target
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=folder)
    os.close(fd)
    obj = tmp[:-3] + ".o"
    omp = _openmp_runtime()
    try:
        try:
            if omp is None:
                raise RuntimeError("no OpenMP runtime beside Paddle")
            # compile with OpenMP but link Paddle's libiomp5 (it provides the GOMP entry points), not libgomp
            _run([cc, *_flags(), "-fopenmp", "-c", SOURCE, "-o", obj])
            _run([cc, "-shared", obj, "-o", tmp, f"-L{os.path.dirname(omp)}", "-l:libiomp5.so",
                  f"-Wl,-rpath,{os.path.dirname(omp)}", "-lm"])
        except RuntimeError:
            _run([cc, *_flags(), "-shared", SOURCE, "-o", tmp, "-lm"])  # one thread
        os.replace(tmp, target)
    finally:
        for leftover in (tmp, obj):
            if os.path.exists(leftover):
                os.remove(leftover)
    return target


def _key(cc):
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout.splitlines()[:1]
    except OSError:
        version = []
    with open(SOURCE, "rb") as f:
        source = f.read()
    parts = [source, repr((version, _flags(), platform.machine(), sorted(cpu_flags()), _openmp_runtime(),
                           ABI_VERSION)).encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]


def _load(path):
    lib = ctypes.CDLL(path)
    for name, args in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.argtypes = args
        fn.restype = ctypes.c_int if name in ("ppvit_max_threads", "ppvit_abi_version") else None
    if lib.ppvit_abi_version() != ABI_VERSION:
        raise RuntimeError(f"{path} is ABI {lib.ppvit_abi_version()}, expected {ABI_VERSION}")
    return lib


def library():
    """The loaded C library (ctypes.CDLL), or None when it cannot be built here (no C compiler, a failed
    build: warned once, with the reason; ``why()`` keeps it). Built at the first call of the process."""
    if _state["tried"]:
        return _state["lib"]
    with _lock:
        if _state["tried"]:
            return _state["lib"]
        try:
            cc = _compiler()
            if cc is None:
                raise RuntimeError("no C compiler found (set CC, or install gcc)")
            key = _key(cc)
            try:
                path = _build(cc, os.path.join(cache_dir(), "kernels", key))
            except OSError:  # an unwritable cache: build for this process only
                path = _build(cc, tempfile.mkdtemp(prefix="ppvit-kernels-"))
            _state["lib"] = _load(path)
        except Exception as e:  # noqa: BLE001 - any failure means "use Paddle's ops", said once
            _state["why"] = f"{type(e).__name__}: {e}"
            warnings.warn(f"ppvit's C kernels are not available ({_state['why']}); GELU and LayerNorm run "
                          f"Paddle's own (slower) CPU ops", RuntimeWarning, stacklevel=2)
        _state["tried"] = True
    return _state["lib"]


def call(name, *args):
    """Call the C function ``name`` of ``library()`` (which must not be None): Paddle tensors and numpy arrays go
    as pointers to their memory (None as NULL), numbers as they are. The arguments are held until the call
    returns, so no temporary's memory can be freed under it (as ``f(np.empty(n).ctypes.data)`` would)."""
    import numpy as np
    fn = getattr(library(), name)
    return fn(*[a.data_ptr() if isinstance(a, paddle.Tensor) else a.ctypes.data if isinstance(a, np.ndarray)
                else a for a in args])


def why():
    """Why ``library()`` is None (a message), or None when it loaded or was not tried yet."""
    return _state["why"]


if __name__ == "__main__":  # python -m ppvit.kernels.native: build now and say where
    lib = library()
    print(lib._name if lib is not None else f"not built: {why()}", file=sys.stdout if lib else sys.stderr)
    sys.exit(0 if lib is not None else 1)
