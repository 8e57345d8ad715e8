"""Telling a Ctrl-C apart from a crash when Paddle has re-raised it as something else."""
import signal
import threading


class CtrlCWatch:
    """Notes that Ctrl-C (SIGINT) arrived, then raises KeyboardInterrupt as Python's own handler does.

    Why: Paddle re-raises a KeyboardInterrupt that lands inside a PyLayer's forward or backward (the kernels of
    ``ppvit.kernels``, run from Paddle's C++ autograd) as an OSError naming it, so ``except
    KeyboardInterrupt`` alone let such a Ctrl-C end a run with a traceback and exit 1. With the note, an
    exception that surfaces after a Ctrl-C (``seen``) is the interrupt.

    ``start`` installs the handler only from the main thread and only over Python's default one (a host that set
    its own, such as a notebook kernel, keeps it); under another watch's handler (the ``ppvit`` command's, then
    training's) it shares that watch's note. ``stop`` restores the default handler. Also a context manager.
    """

    def __init__(self):
        self._seen, self._installed, self._outer = False, False, None

    @property
    def seen(self):
        """True once a Ctrl-C arrived while this watch (or the one it shares) was on."""
        return self._seen or (self._outer is not None and self._outer.seen)

    def start(self):
        current = signal.getsignal(signal.SIGINT)
        if isinstance(getattr(current, "__self__", None), CtrlCWatch):
            self._outer = current.__self__
        elif threading.current_thread() is threading.main_thread() and current is signal.default_int_handler:
            signal.signal(signal.SIGINT, self._handler)
            self._installed = True
        return self

    def _handler(self, signum, frame):
        self._seen = True
        raise KeyboardInterrupt

    def stop(self):
        if self._installed:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            self._installed = False

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False
