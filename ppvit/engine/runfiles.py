"""What a run folder holds, declared by the code that writes it: each writer names its files with ``run_file``,
``run_pattern`` or ``run_folder`` where it defines them (``checkpoint.py``: the weights and ``latest``;
``trainer.py``: the log, config and curves; ``state.py``: the history; ``vdl.py``; the verbs in
``ppvit.commands``: evaluations, exports, predictions, explanations), so the list that ``Global.overwrite``
removes and that marks a folder as holding a run cannot drift from what is written.

``declared()`` imports the writers (the engine's and every module of ``ppvit.commands``, found by
``pkgutil``, not listed) and returns the names.
"""
import importlib
import pkgutil

_DECLARED = {}  # name or pattern -> {"kind": "file" | "pattern" | "folder", "training": bool, "marker": bool}


def _declare(name, kind, training=False, marker=False):
    _DECLARED[name] = {"kind": kind, "training": training, "marker": marker}
    return name


def run_file(name, training=False, marker=False):
    """Declare a file that a run folder may hold; returns ``name``. ``training``: written by training before its
    first checkpoint (a new start replaces it); ``marker``: a checkpoint or weights, which make a folder a run
    to protect."""
    return _declare(name, "file", training, marker)


def run_pattern(pattern):
    """Declare a family of files (``fnmatch`` pattern, e.g. ``eval_*.json``); returns ``pattern``."""
    return _declare(pattern, "pattern")


def run_folder(name, training=False):
    """Declare a folder that a run folder may hold (removed whole by ``Global.overwrite``); returns ``name``."""
    return _declare(name, "folder", training)


def declared():
    """``{name: {"kind", "training", "marker"}}`` of every writer, after importing them all."""
    from .. import commands
    from . import trainer  # noqa: F401  (the engine's writers: checkpoint, state, vdl, trainer)

    for module in pkgutil.iter_modules(commands.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{commands.__name__}.{module.name}")
    return dict(_DECLARED)


def names(kind, training=None, marker=None):
    """The declared names of ``kind``, optionally only those with the given ``training``/``marker`` flags."""
    return tuple(n for n, d in declared().items() if d["kind"] == kind
                 and (training is None or d["training"] == training) and (marker is None or d["marker"] == marker))
