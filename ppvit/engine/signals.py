"""Stopping a training run from outside: Ctrl-C (SIGINT), SIGTERM (what a job scheduler or ``docker stop``
sends) and SIGHUP (a closed terminal) all end a run the same way: the last committed checkpoint is kept, the
DataLoader worker processes are stopped, one line says what was kept, and the process exits with 128 + the
signal number (130, 143, 129), as a shell reports a process killed by it.

``StopWatch`` installs the handlers for the run; ``StopWatch.deferred()`` holds a stop back while a checkpoint
and its epoch files are written, so that a signal landing there ends the run only once they are all on disk
(a SIGKILL cannot be held back: ``engine/trainer.py`` finishes such files on resume). ``stop_children`` ends
any worker process a loader left behind.
"""
import contextlib
import multiprocessing
import signal
import threading

STOP_SIGNALS = tuple(s for s in (getattr(signal, n, None) for n in ("SIGINT", "SIGTERM", "SIGHUP")) if s is not None)


def exit_code(signum):
    """The exit status of a process ended by ``signum``: 128 + its number (SIGINT 130, SIGTERM 143, SIGHUP 129)."""
    return 128 + int(signum)


def signal_name(signum):
    return {signal.SIGINT: "Ctrl-C"}.get(signum) or signal.Signals(signum).name


class StopRequested(KeyboardInterrupt):
    """Raised in the main thread when a stop signal arrives (a ``KeyboardInterrupt``, so code that handles
    Ctrl-C handles SIGTERM and SIGHUP too). ``signum``: the signal."""

    def __init__(self, signum):
        super().__init__(signal_name(signum))
        self.signum = signum


class StopWatch:
    """Handlers for SIGINT, SIGTERM and SIGHUP while a run trains (``start``/``stop``, or a context manager).

    A handler notes the signal (``signum``) and raises ``StopRequested``; inside ``deferred()`` it only notes it,
    and the block raises on exit. An exception that surfaces after a signal (Paddle re-raises a
    KeyboardInterrupt that lands in its C++ as another error; a DataLoader reports its stopped workers as a
    RuntimeError) is then known to be the stop (``signum`` is set).

    Installed only from the main thread, and only over the default handlers (SIGINT: Python's
    ``default_int_handler`` or an outer ``ppvit.utils.interrupt.CtrlCWatch``, which is told of the Ctrl-C;
    SIGTERM/SIGHUP: ``SIG_DFL``): a host's own handler (a notebook kernel's) and an ignored signal (``nohup``'s
    SIGHUP) are kept. ``stop`` puts the previous handlers back.
    """

    def __init__(self):
        self.signum = None
        self._previous = {}
        self._deferring = 0
        self.children_before = set()  # pids of the processes already running when the watch started

    def _ours(self, sig, current):
        if sig == signal.SIGINT:
            return current is signal.default_int_handler or type(getattr(current, "__self__", None)).__name__ \
                == "CtrlCWatch"
        return current == signal.SIG_DFL

    def start(self):
        self.children_before = {p.pid for p in multiprocessing.active_children()}
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in STOP_SIGNALS:
            current = signal.getsignal(sig)
            if self._ours(sig, current):
                self._previous[sig] = current
                signal.signal(sig, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.signum is None:
            self.signum = signum
        outer = getattr(self._previous.get(signum), "__self__", None)
        if outer is not None and hasattr(outer, "_seen"):  # the ppvit command's Ctrl-C watch learns of it too
            outer._seen = True
        if not self._deferring:
            raise StopRequested(signum)

    @contextlib.contextmanager
    def deferred(self):
        """Hold a stop signal back for the block (a checkpoint and the files that go with it); raise it after."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        if not self._deferring and self.signum is not None:
            raise StopRequested(self.signum)

    def stop(self):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False


def shutdown_loader_iterator(iterator, timeout=2.0):
    """Stop a DataLoader iterator's worker processes now (Paddle's ``_try_shutdown_all``, which its ``__del__``
    calls only once the last reference, possibly a traceback's, is gone). A no-op for in-process loading."""
    shutdown = getattr(iterator, "_try_shutdown_all", None)
    if shutdown is None:
        return
    try:
        shutdown(timeout)
    except Exception:  # noqa: BLE001 - stopping workers is best effort; stop_children ends what is left
        pass


def stop_children(keep=(), timeout=2.0):
    """Terminate (then kill) the ``multiprocessing`` children still running but those in ``keep`` (pids: the
    processes a host, e.g. a notebook, had started before the run), i.e. DataLoader workers of an interrupted
    epoch, so that no worker outlives the run. Returns how many were stopped."""
    children = [p for p in multiprocessing.active_children() if p.pid not in keep]
    for child in children:
        child.terminate()
    for child in children:
        child.join(timeout)
        if child.is_alive():
            child.kill()
            child.join(timeout)
    return len(children)
