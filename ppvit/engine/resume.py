"""The rules that protect a run (its state is ``engine/state.py``'s ``TrainState``):

- ``plan_resume``: a resume is compared with the saved run *before anything is written*. A change that alters
  the remaining computation (model, loss, optimizer type and settings, data, batch, schedule, seed, epochs) is
  refused, naming the keys; keys that cannot change the result (paths, device, workers, eval batch size,
  logging and save intervals, the verbs' sections) are accepted; a changed ``Optimizer.lr`` is accepted and
  applies from the first resumed step. A finished run is trained further only with ``Global.extend=true``:
  the added epochs get a schedule of their own (the same kind, over the added steps, without warmup: a warm
  restart), recorded in the state so that an interrupted extension resumes on the same curve.
- ``check_run_folder``: a new run never trains into a folder that holds a run, unless ``Global.overwrite``.
"""
import os

from .checkpoint import final_written
from . import runfiles
from .config import ConfigError, resume_changes

# The files and folders of a run folder are declared by their writers (engine/runfiles.py): Global.overwrite
# removes those and nothing else; a checkpoint or weights (a "marker") make the folder a run to protect; an
# earlier start that wrote none left only "training" files, which a new start replaces.


def _fmt(value):
    return "null" if value is None else repr(value) if isinstance(value, str) else str(value)


def plan_resume(saved, cfg, steps_per_epoch, run):
    """Check a resume of ``saved`` (a ``TrainState``) with the config ``cfg``; returns what the resumed run
    must do differently: ``{"lr": (old, new) or None, "extend": (old_epochs, new_epochs) or None}``.

    Raises ``ConfigError`` (one line naming the keys and the way forward) for a resume that would change
    the run. Nothing is written here.
    """
    changes = resume_changes(saved.config, cfg)
    old_epochs, new_epochs = saved.config["Global"]["epochs"], cfg["Global"]["epochs"]
    weights = os.path.join(run, "final_model.pdparams" if saved.finished and final_written(run) else "latest.pdparams")
    new_run = f"-o Global.run_name=NAME -o Global.pretrained_model={weights} (instead of Global.checkpoints)"
    how = (f"resume with the run's values (its config is {os.path.join(run, 'config.yaml')}), or start a new run "
           f"from its weights in another folder: {new_run}")
    if changes["same"]:
        listed = ", ".join(f"{k} ({_fmt(a)} -> {_fmt(b)})" for k, a, b in changes["same"])
        raise ConfigError(f"cannot resume {saved.path}: this config changes {listed}, which alters the rest of "
                          f"the run; {how}")
    if steps_per_epoch != saved.steps_per_epoch:  # same data settings, another world size
        raise ConfigError(f"cannot resume {saved.path}: it was trained with {saved.steps_per_epoch} steps per epoch, "
                          f"this launch gives {steps_per_epoch} (another number of processes?); resume with the "
                          f"run's device count, or start a new run from its weights: {new_run}")
    done = f"{saved.epoch}/{old_epochs}"
    extend = None
    if new_epochs < saved.epoch or (new_epochs == saved.epoch and saved.batch):
        raise ConfigError(f"cannot resume {saved.path} with Global.epochs={new_epochs}: the run has already trained "
                          f"{saved.epoch} epochs ({done}); resume with Global.epochs={old_epochs}, or start a new run from its "
                          f"weights: {new_run}")
    if cfg["Global"]["extend"]:
        if not saved.finished:
            raise ConfigError(f"Global.extend trains a finished run for more epochs, but {saved.path} stopped at epoch "
                              f"{done}: resume it with Global.epochs={old_epochs} first (Global.checkpoints, without Global.extend)")
        if new_epochs <= old_epochs:
            raise ConfigError(f"Global.extend: set Global.epochs above the run's {old_epochs} epochs (the total to "
                              f"reach, e.g. -o Global.epochs={2 * old_epochs} with Global.checkpoints as now)")
        extend = (old_epochs, new_epochs)
    elif new_epochs != old_epochs:
        if saved.finished and new_epochs > old_epochs:
            raise ConfigError(f"{saved.path} is a finished run ({done} epochs); to train it to {new_epochs} epochs "
                              "say so with -o Global.extend=true (the schedule restarts over the added epochs; "
                              f"see docs/training.md), or start a new run from its weights: {new_run}")
        raise ConfigError(f"cannot resume {saved.path} with Global.epochs={new_epochs}: the run is scheduled over "
                          f"{old_epochs} epochs (it is at {done}) and another count changes its learning-rate "
                          f"schedule; resume with Global.epochs={old_epochs}, then extend it with -o "
                          "Global.extend=true if you want more (Global.checkpoints as now)")
    elif saved.finished and final_written(run):
        raise ConfigError(f"{saved.path} has already trained all its epochs ({done}); nothing to resume. To train "
                          f"it further: -o Global.epochs=N -o Global.extend=true; to start a new run from its weights: {new_run}")
    lr = changes["lr"][0][1:] if changes["lr"] else None
    return {"lr": lr, "extend": extend}


def holds_run(folder):
    return any(os.path.exists(os.path.join(folder, f)) for f in runfiles.names("file", marker=True))


def check_run_folder(cfg, run):
    """A new run (no ``Global.checkpoints``) may start in ``run`` only when no run is there, or when
    ``Global.overwrite`` says to replace it. Raises ``ConfigError``; writes nothing. Returns True when the
    folder holds only what an earlier start wrote before its first checkpoint (its declared training files): nothing to
    protect, the new run replaces it."""
    g = cfg["Global"]
    if g["checkpoints"] or g["overwrite"]:
        return False
    if not holds_run(run):
        return any(os.path.isfile(os.path.join(run, f)) for f in runfiles.names("file", training=True))
    what = ""
    latest = os.path.join(run, "latest.pdstate")
    if os.path.isfile(latest):
        what = " (it has a latest.pdstate to resume)"
    raise ConfigError(f"{run} already holds a run{what}; resume it with -o Global.checkpoints={run}, train "
                      "into another folder with -o Global.run_name=NAME, or replace it with -o Global.overwrite=true")


def clear_run_folder(run, training_only=False):
    """``Global.overwrite``: remove what an earlier run (and the verbs on its weights) wrote into ``run``,
    so that nothing of it sits beside the new run's weights; other files are left alone. ``training_only``:
    only what an earlier start left before its first checkpoint (the declared training files and folders). Returns the
    removed names."""
    import fnmatch
    import shutil

    only = True if training_only else None
    files, patterns = runfiles.names("file", training=only), runfiles.names("pattern", training=only)
    folders = runfiles.names("folder", training=only)
    removed = []
    present = sorted(os.listdir(run)) if os.path.isdir(run) else []
    for name in present:
        path = os.path.join(run, name)
        ours = name in files or any(fnmatch.fnmatchcase(name, p) for p in patterns)
        if ours and os.path.isfile(path):
            os.remove(path)
            removed.append(name)
    for name in folders:
        path = os.path.join(run, name)
        if os.path.isdir(path):
            shutil.rmtree(path)
            removed.append(name + "/")
    return removed
