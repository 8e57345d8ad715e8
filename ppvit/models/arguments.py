"""Checking a model's keyword arguments without building it, so a config's ``Arch`` keys are validated when
the config loads (a wrong name or type is a config mistake, not a traceback from deep inside a layer).

Registered builders merge their variant's values with the caller's keyword arguments and call the family's
class; what reaches that class's ``__init__`` is what matters. ``constructor_arguments`` runs the builder
under a trace hook that stops at the first line of the model class's ``__init__`` and returns the bound
arguments: no sub-layer is built and no weight is allocated (microseconds, any model size).
"""
import difflib
import inspect
import sys

import paddle


class _Stop(Exception):
    """Raised by the trace hook at the first line of the model's ``__init__``."""


def constructor_arguments(builder, kwargs):
    """(model class, {argument: value}) as ``builder(**kwargs)`` would construct it, without constructing it.

    Raises what the builder or the class raises for arguments it does not accept (``TypeError``).
    """
    found = {}

    def stop_at_first_line(frame, event, arg):
        if event == "line":
            raise _Stop
        return stop_at_first_line

    def on_call(frame, event, arg):
        if found or event != "call" or frame.f_code.co_name != "__init__":
            return None
        layer = frame.f_locals.get("self")
        if isinstance(layer, paddle.nn.Layer) and type(layer).__module__.startswith("ppvit.models"):
            found["cls"], found["frame"] = type(layer), frame
            return stop_at_first_line
        return None

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        builder(**kwargs)
    except _Stop:
        pass
    finally:
        sys.settrace(previous)
    if not found:  # a builder that builds no ppvit layer: nothing to compare against
        return None, {}
    cls, frame = found["cls"], found["frame"]
    params = [p for p in inspect.signature(cls.__init__).parameters.values()
              if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"]
    values = {p.name: frame.f_locals[p.name] for p in params if p.name in frame.f_locals}
    del frame
    return cls, values


def _kind(value):
    """A readable type name, and the YAML types that may stand for ``value``."""
    if isinstance(value, bool):
        return "bool", (bool,)
    if isinstance(value, int):
        return "int", (int,)
    if isinstance(value, float):
        return "float", (int, float)
    if isinstance(value, str):
        return "str", (str,)
    if isinstance(value, (list, tuple)):
        return "list", (list, tuple)
    return None, ()


def _matches(reference, value):
    name, accepted = _kind(reference)
    if name is None:
        return True
    if isinstance(value, bool) and bool not in accepted:
        return False
    if not isinstance(value, accepted):
        return False
    if name == "list" and reference and value:
        # [64, 128] takes a list of ints, ((1, 2), (1, 2, 3)) a list of lists
        return all(any(_matches(r, v) for r in reference) for v in value)
    return True


def check_arguments(name, builder, kwargs):
    """Problems with ``kwargs`` (config values) for the registered model ``name``: a list of
    ``(key, message)``; empty when every argument is accepted with a fitting type."""
    try:
        cls, reference = constructor_arguments(builder, {})
    except Exception:  # a builder that needs arguments: leave the checks to the build itself
        return []
    if cls is None:
        return []
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    try:
        _, given = constructor_arguments(builder, dict(kwargs))
    except TypeError as e:
        unknown = [k for k in kwargs if k not in accepted]
        if not unknown:
            return [(next(iter(kwargs), ""), f"{name} rejected its arguments: {e}")]
        problems = []
        for key in unknown:
            close = difflib.get_close_matches(key, sorted(accepted), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            problems.append((key, f"{name} has no argument {key!r}{hint}; its arguments: "
                                  f"{', '.join(sorted(accepted - {'num_classes'}))}"))
        return problems
    problems = []
    for param, value in given.items():
        ref = reference.get(param)
        if value is ref or ref is None:
            continue
        key = param if param in kwargs else next((k for k in kwargs if k not in accepted), param)
        if callable(ref) and not isinstance(ref, (int, float, str, list, tuple)):
            if value is not ref:
                problems.append((key, f"{name}'s {param} is a layer class ({getattr(ref, '__name__', ref)}); "
                                      "it cannot be set from a config"))
            continue
        if not _matches(ref, value):
            problems.append((key, f"must be {_kind(ref)[0]} like {name}'s default {ref!r}, got {value!r} "
                                  f"({type(value).__name__})"))
    return problems
