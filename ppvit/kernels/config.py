"""The one switch of ppvit's kernels (as timm's ``set_fused_attn`` / ``use_fused_attn``).

On by default; off for the process with ``set_enabled(False)`` or the environment variable ``PPVIT_KERNELS=0``
(read on first use), and for a block of code in this thread with ``use_kernels(False)``. Off, every model layer
runs Paddle's own ops (``nn.Conv2D``'s conv and bias add, plain slices). ``depthwise_formulation`` forces one
depthwise formulation in this thread (``"reference"``: the kernels off, as ``use_kernels(False)``).
"""
import contextlib
import os
import threading

import paddle

ENV_VAR = "PPVIT_KERNELS"
DEPTHWISE_FORMULATIONS = ("plain", "toeplitz", "rows", "fft", "direct")

_ON, _OFF = ("1", "true", "on", "yes"), ("0", "false", "off", "no")
_process = {"enabled": None}  # None: not read from the environment yet
_thread = threading.local()  # .enabled (use_kernels), .formulation (depthwise_formulation)


def _from_env():
    value = os.environ.get(ENV_VAR, "1").strip().lower()
    if value in _ON:
        return True
    if value in _OFF:
        return False
    raise ValueError(f"{ENV_VAR}={value!r} is not a switch: set {ENV_VAR}=1 (ppvit's kernels, the default) or "
                     f"{ENV_VAR}=0 (Paddle's own ops)")


def set_enabled(enabled=True):
    """Turn ppvit's kernels on or off for the whole process (overrides ``PPVIT_KERNELS``)."""
    _process["enabled"] = bool(enabled)


def is_enabled():
    """True when the kernels may run here: this thread's ``use_kernels`` / ``depthwise_formulation`` setting,
    else ``set_enabled``'s, else ``PPVIT_KERNELS`` (default on). Raises ValueError for a malformed
    ``PPVIT_KERNELS``."""
    if getattr(_thread, "formulation", None) == "reference":
        return False
    local = getattr(_thread, "enabled", None)
    if local is not None:
        return local
    if _process["enabled"] is None:
        _process["enabled"] = _from_env()
    return _process["enabled"]


def active():
    """``is_enabled()`` and in dygraph: the kernels are dygraph formulations (a static graph, i.e. export or
    ``paddle.jit.to_static``, always records Paddle's own ops)."""
    return paddle.in_dynamic_mode() and is_enabled()


def on_cpu_float32(x):
    """x is a float32 tensor on the CPU, where the kernels were measured faster."""
    return x.dtype == paddle.float32 and x.place.is_cpu_place()


@contextlib.contextmanager
def use_kernels(enabled=True):
    """Turn ppvit's kernels on or off in this thread while the context is active."""
    previous = getattr(_thread, "enabled", None)
    _thread.enabled = bool(enabled)
    try:
        yield
    finally:
        _thread.enabled = previous


def forced_formulation():
    """The depthwise formulation ``depthwise_formulation`` forces in this thread, or None (the shape rule)."""
    return getattr(_thread, "formulation", None)


@contextlib.contextmanager
def depthwise_formulation(name):
    """Force every ``DepthwiseConv2D`` in this thread to one formulation while the context is active:
    ``"reference"`` is Paddle's own ops everywhere (the kernels off: exactly ``nn.Conv2D``'s forward, what tests
    and benchmarks compare against), ``"auto"`` the shape rule, or one of ``DEPTHWISE_FORMULATIONS``. Raises
    ValueError for another name."""
    if name not in DEPTHWISE_FORMULATIONS + ("reference", "auto"):
        raise ValueError(f"unknown depthwise formulation {name!r}: use one of "
                         f"{('reference', 'auto') + DEPTHWISE_FORMULATIONS}")
    previous = getattr(_thread, "formulation", None)
    _thread.formulation = None if name == "auto" else name
    try:
        yield
    finally:
        _thread.formulation = previous
