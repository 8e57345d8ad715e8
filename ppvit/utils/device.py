"""Device resolution, once, for training (``Global.device``) and Paddle Inference (``Predictor(device=)``)."""

__all__ = ["has_gpu", "resolve_device"]


def has_gpu():
    """True when Paddle was compiled with CUDA and sees at least one GPU."""
    import paddle

    return paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0


def resolve_device(device, key="device"):
    """``"auto"`` | ``"cpu"`` | ``"gpu"`` | ``"gpu:N"`` -> ``("cpu", None)`` or ``("gpu", N)``; ``auto`` is the
    GPU when Paddle has one. Raises ``PpvitError`` (a ``ValueError``, naming ``key``) for a GPU this Paddle
    cannot use or an unknown name: the user's to fix."""
    from ..errors import PpvitError

    device = str(device or "auto").lower()
    gpu = has_gpu()
    if device == "auto":
        return ("gpu", 0) if gpu else ("cpu", None)
    if device == "cpu":
        return ("cpu", None)
    if device.startswith("gpu"):
        if not gpu:
            import paddle

            raise PpvitError(f"{key} is {device}, but this Paddle has no usable GPU (compiled with CUDA: "
                             f"{paddle.device.is_compiled_with_cuda()}, or no visible device); use cpu or auto")
        return ("gpu", int(device.split(":")[1]) if ":" in device else 0)
    raise PpvitError(f"{key} must be 'auto', 'cpu', 'gpu' or 'gpu:N', got {device!r}")
