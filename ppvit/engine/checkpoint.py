"""Run checkpoints: the notebooks' ``best_model``/``final_model`` files and a resumable ``latest``.

``latest.pdstate`` alone holds everything a resume needs (model, optimizer, scheduler, EMA, and the
``TrainState``: epoch/step, best metric, per-epoch history, config, schedule segment, RNG streams), so a single
atomic rename commits a checkpoint and a kill at any moment leaves the previous one whole. The per-step history
is appended to ``history_steps.jsonl`` just before the commit and read back up to the checkpoint's step.
``latest.pdparams`` and ``latest.pdopt`` are the same weights and optimizer in the notebooks' format, for
``pretrained_model``, written after the commit (``engine/trainer.py``'s ``_write_after_commit``).
"""
import os

import numpy as np
import paddle

from ..io import CheckpointError, check_state_dict, save_state
from ..models.helpers import model_name
from .config import ConfigError, run_dir
from .runfiles import run_file

LATEST = "latest"
WEIGHT_FILES = tuple(run_file(stem + ext, marker=ext == ".pdparams") for stem in ("best_model", "final_model")
                     for ext in (".pdparams", ".pdopt"))
LATEST_FILES = (run_file(LATEST + ".pdstate", marker=True), run_file(LATEST + ".pdparams"), run_file(LATEST + ".pdopt"))
STATE_VERSION = 1  # the layout of latest.pdstate; a file of another version is refused


def unwrap(model):
    """The layer inside ``paddle.DataParallel``."""
    return getattr(model, "_layers", model)


def save_weights(model, optimizer, prefix):
    """``prefix.pdparams`` + ``prefix.pdopt``, as the notebooks wrote them (each atomically)."""
    save_state(unwrap(model).state_dict(), prefix + ".pdparams")
    save_state(optimizer.state_dict(), prefix + ".pdopt")


def _param_names(model):
    """unique parameter name (``linear_3.w_0``) -> structured name (``head.weight``)."""
    return {p.name: n for n, p in unwrap(model).named_parameters()}


def optimizer_state_by_structured_name(optimizer, model):
    """Optimizer accumulators are keyed by Paddle's process-global unique names (``conv2d_7.w_0_moment1_0``),
    which depend on what was built before; re-key them by structured name so any process can load them."""
    by_unique = _param_names(model)
    out = {}
    for key, value in optimizer.state_dict().items():
        owner = max((u for u in by_unique if key.startswith(u + "_")), key=len, default=None)
        out[("param", by_unique[owner], key[len(owner):]) if owner else ("other", key)] = value
    return out


def optimizer_state_for(model, state):
    by_structured = {n: p.name for n, p in unwrap(model).named_parameters()}
    out = {}
    for key, value in state.items():
        if key[0] == "param":
            if key[1] not in by_structured:
                raise CheckpointError(f"optimizer state names parameter {key[1]!r}, which the model lacks")
            out[by_structured[key[1]] + key[2]] = value
        else:
            out[key[1]] = value
    return out


def save_latest(run_dir, model, optimizer, scheduler, train_state, mixer=None, ema=None, scaler=None):
    """Append the new steps to ``history_steps.jsonl``, then write ``latest.pdstate`` (the commit point).
    ``scaler``: the AMP ``GradScaler``, whose loss scale and step counters resume with the run."""
    from .state import STEPS_FILE

    train_state.history.flush_steps(os.path.join(run_dir, STEPS_FILE))
    prefix = os.path.join(run_dir, LATEST)
    state = {
        "version": STATE_VERSION,
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer_state_by_structured_name(optimizer, model),
        "scheduler": scheduler.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "scaler": scaler.state_dict() if scaler is not None else None,
        "meta": train_state.state_dict(mixer),
    }
    save_state(state, prefix + ".pdstate")


def final_written(run):
    """True when ``run``'s ``final_model`` files were written after its ``latest.pdstate`` (the run's last
    commit), i.e. a finished run has all its files; False when a kill came between the two."""
    latest = os.path.join(run, LATEST + ".pdstate")
    finals = [os.path.join(run, "final_model" + ext) for ext in (".pdparams", ".pdopt")]
    if not all(os.path.isfile(f) for f in finals):
        return False
    return not os.path.isfile(latest) or min(os.stat(f).st_mtime_ns for f in finals) >= os.stat(latest).st_mtime_ns


def resolve_checkpoint(path):
    """``Global.checkpoints`` may name the run folder, the ``latest`` prefix or the ``.pdstate`` file."""
    path = os.fspath(path)
    candidates = [path] if path.endswith(".pdstate") else [
        os.path.join(path, LATEST + ".pdstate"), path + ".pdstate"]
    for c in candidates:
        if os.path.isfile(c):
            return c
    raise CheckpointError(
        f"Global.checkpoints: no resumable checkpoint at {path} (looked for {' and '.join(candidates)}); "
        "give a run folder or its 'latest' prefix")


def load_latest(path):
    """Read a ``.pdstate`` file; any unreadable or foreign file raises CheckpointError."""
    path = resolve_checkpoint(path)
    try:
        state = paddle.load(path)
    except Exception as e:  # truncated files raise EOFError, UnpicklingError, ValueError, ...
        raise CheckpointError(f"cannot read checkpoint {path} ({type(e).__name__}: {e}); it may be "
                              "truncated") from None
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION or "meta" not in state:
        raise CheckpointError(f"{path} is not a ppvit training checkpoint")
    state["path"] = path
    return state


def load_exact(model, weights, source):
    """Set every tensor of ``model`` from ``weights``; any missing, unexpected or reshaped key is an error
    (a resumed run must be the same model, head included)."""
    own = model.state_dict()
    check_state_dict(own, weights, source, model_name(model), "was it trained with another Arch? resume with the config of "
                     "that run", context=" for this config")
    model.set_state_dict({k: paddle.to_tensor(np.asarray(weights[k]), dtype=v.dtype) for k, v in own.items()})


def read_train_state(state):
    """The ``TrainState`` of a ``load_latest`` state (nothing is loaded into any object yet)."""
    from .state import STEPS_FILE, TrainState

    train_state = TrainState.from_state_dict(state["meta"], path=state["path"])
    if not train_state.history.steps["step"]:  # the steps are in the run's steps file, up to this checkpoint
        train_state.history.read_steps(os.path.join(os.path.dirname(state["path"]), STEPS_FILE),
                                       train_state.global_step)
    return train_state


def restore(state, model, optimizer, scheduler, ema=None, scaler=None):
    """Load a ``load_latest`` state's tensors into freshly built objects; the model must match key for key.
    (The ``TrainState``, random streams included, is ``read_train_state``'s.)"""
    load_exact(unwrap(model), state["model"], state["path"])
    optimizer.set_state_dict(optimizer_state_for(model, state["optimizer"]))
    scheduler.set_state_dict(state["scheduler"])
    if ema is not None and state.get("ema") is not None:
        ema.set_state_dict(state["ema"])
    if scaler is not None and state.get("scaler"):  # an AMP run's loss scale (empty from a disabled scaler)
        scaler.load_state_dict(state["scaler"])



def weights_fix(weights, default):
    """What a weights-mismatch error advises: for weights inside a run folder (it has the ``config.yaml`` the
    run trained with), the run folder as the config (``-c RUN``: its Arch and every override it trained with);
    else ``default``."""
    folder = os.path.dirname(os.path.abspath(os.fspath(weights)))
    if os.path.isfile(os.path.join(folder, "config.yaml")):
        return (f"these weights come from the run {folder}, trained with other Arch settings than this config's: "
                f"give the run folder as the config (-c {folder}), which has every setting it trained with")
    return default


def files_follow_checkpoint(run):
    """False when a stop came between ``run``'s last commit of ``latest.pdstate`` and the files that follow
    it (``best_model`` of a best epoch, ``history.json``, ``final_model``): told by the files' times, reading
    the checkpoint only when they cannot tell an end-of-epoch commit from a mid-epoch one."""
    def mtime(name):
        path = os.path.join(run, name)
        return os.stat(path).st_mtime_ns if os.path.isfile(path) else None

    committed = mtime(LATEST + ".pdstate")
    if committed is None:
        return True
    if (mtime(LATEST + ".pdopt") or 0) < committed:
        return False  # the notebook-format copies come first after a commit
    if (mtime("history.json") or 0) >= committed:
        return True  # the epoch's files were written after it
    try:
        meta = load_latest(run)["meta"]
    except CheckpointError:
        return True  # an unreadable checkpoint is the resume's to report
    return meta["batch"] != 0  # a mid-epoch commit has no epoch files to follow it


def run_weights(cfg):
    """The weights that eval, export and explain use: ``Global.pretrained_model``, else the run's
    ``best_model.pdparams``; raises ``ConfigError`` when neither is there."""
    given = cfg["Global"]["pretrained_model"]
    if given:
        return given
    run = run_dir(cfg)
    best = os.path.join(run, "best_model.pdparams")
    if os.path.isfile(best):
        if not files_follow_checkpoint(run):
            raise ConfigError(f"{run} was stopped while it wrote the files of its last checkpoint, so {best} may "
                              "hold an earlier epoch than the best one: resume the run to finish them (-o "
                              f"Global.checkpoints={run}), or give the weights with -o Global.pretrained_model=PATH")
        return best
    raise ConfigError(f"Global.pretrained_model is not set and {best} does not exist: give the weights "
                      "with -o Global.pretrained_model=path/to/model.pdparams")
