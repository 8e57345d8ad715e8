"""A run stopped at any write of an epoch's end (Ctrl-C, or a kill that runs no handler) resumes to the
uninterrupted result, and ``best_model`` holds the epoch that the state and ``history.json`` name.

The interrupt is injected in-process at the N-th write into the run folder (every atomic rename and the append to
``history_steps.jsonl``): no timing windows. A "kill" is an exception that no ppvit handler catches, so nothing
runs after it but the ``finally`` blocks (closing the log): what SIGKILL leaves on disk. One real SIGKILL (a child
process killed while it writes ``best_model``) checks that the simulation is faithful.
"""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

from ppvit.engine import Engine, load_config
from ppvit.engine.checkpoint import load_latest
from ppvit.engine.state import History
from ppvit.engine.trainer import TrainingInterrupted
from ppvit.io import load_state

from runs import ROOT, TINY

# 2 epochs of 4 steps; the second epoch is the best (the case of a stale best_model)
CFG = dict(TINY, Optimizer=dict(TINY["Optimizer"], lr=0.05, weight_decay=0.0))
# the writes of the last epoch's end, in order (a test below checks this list against the trainer)
EPOCH_END = ["history_steps.jsonl", "latest.pdstate", "latest.pdparams", "latest.pdopt", "best_model.pdparams",
             "best_model.pdopt", "history.json", "loss_curve.png", "acc_curve.png", "final_model.pdparams",
             "final_model.pdopt"]


class Killed(BaseException):
    """Raised at a write: no ppvit handler catches it (as with SIGKILL, no interrupt handler runs)."""


def _placeholder_plots(monkeypatch):
    """The curves are still written (each an atomic write point), as small placeholder files: drawing them
    takes most of a tiny run's time and is tested elsewhere."""
    from ppvit.io import write_text

    monkeypatch.setattr("ppvit.engine.trainer.plot_learning_curve",
                        lambda record, *a, path=None, **k: write_text(a[3] if len(a) > 3 else path, json.dumps(record)))


@pytest.fixture(autouse=True)
def _fast_plots(monkeypatch):
    _placeholder_plots(monkeypatch)


def _cfg(out, *extra):
    return load_config(None, [f"Global.output_dir={out}", *extra], base=CFG)


def _spy(monkeypatch, run, at=None, kind="kill", seen=None):
    """Count the writes into ``run``; raise ``kind`` (KeyboardInterrupt or Killed) just before write ``at``."""
    real_replace, real_flush = os.replace, History.flush_steps
    count = [0]

    def hit(name):
        count[0] += 1
        if seen is not None:
            seen.append(name)
        if count[0] == at:
            raise KeyboardInterrupt if kind == "ctrl_c" else Killed()

    def replace(src, dst, *a, **k):
        if os.path.dirname(os.path.abspath(dst)) == os.path.abspath(run):
            hit(os.path.basename(dst))
        return real_replace(src, dst, *a, **k)

    def flush(self, path):
        hit(os.path.basename(path))
        return real_flush(self, path)

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(History, "flush_steps", flush)


def _same(a, b):
    return a.keys() == b.keys() and max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a) <= 1e-6


def _epochs(run):
    """history.json's epoch records, without the wall-clock ones."""
    with open(os.path.join(run, "history.json")) as f:
        epochs = json.load(f)["epochs"]
    return {k: v for k, v in epochs.items() if k not in ("time", "images_per_sec")}


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    """The uninterrupted run, and a copy of the same run stopped after epoch 1 (where each case starts)."""
    base = tmp_path_factory.mktemp("lifecycle")
    mp = pytest.MonkeyPatch()
    _placeholder_plots(mp)
    try:
        Engine(_cfg(base / "ref")).train()
        Engine(_cfg(base / "half")).train(until_epoch=1)
        resumed_writes = []
        shutil.copytree(base / "half", base / "probe")
        _spy(mp, base / "probe" / "tiny", seen=resumed_writes)
        Engine(_cfg(base / "probe", f"Global.checkpoints={base / 'probe' / 'tiny'}")).train()
    finally:
        mp.undo()
    run, half = str(base / "ref" / "tiny"), str(base / "half" / "tiny")
    assert load_latest(run)["meta"]["best"]["epoch"] == 2 and load_latest(half)["meta"]["best"]["epoch"] == 1
    with open(os.path.join(run, "history_steps.jsonl")) as f:
        steps = f.read()
    return {"base": base, "run": run, "half": half, "final": load_state(os.path.join(run, "final_model.pdparams")),
            "best": {1: load_state(os.path.join(half, "best_model.pdparams")),
                     2: load_state(os.path.join(run, "best_model.pdparams"))},
            "epochs": _epochs(run), "steps": steps, "resumed_writes": resumed_writes}


def test_the_write_points_are_the_listed_ones(ref):
    """On resume config.yaml and the files that follow the checkpoint are written again (the latest copies,
    best_model, history, curves), then the last epoch ends with EPOCH_END; the state commit comes before every file
    derived from it."""
    repair = ["config.yaml", "latest.pdparams", "latest.pdopt", "best_model.pdparams", "best_model.pdopt",
              "history.json", "loss_curve.png", "acc_curve.png"]
    assert ref["resumed_writes"] == repair + EPOCH_END


def _assert_consistent(run, ref):
    """best_model holds the best epoch that latest.pdstate names; history.json lists the epochs it has done."""
    meta = load_latest(run)["meta"]
    assert _same(load_state(os.path.join(run, "best_model.pdparams")), ref["best"][meta["best"]["epoch"]])
    assert _epochs(run)["epoch"] == list(range(1, meta["epoch"] + 1))
    assert _epochs(run)["val_top1"] == ref["epochs"]["val_top1"][:meta["epoch"]]


def _assert_uninterrupted(run, ref):
    assert _same(load_state(os.path.join(run, "final_model.pdparams")), ref["final"])
    assert _same(load_state(os.path.join(run, "best_model.pdparams")), ref["best"][2])
    assert _epochs(run) == ref["epochs"]
    with open(os.path.join(run, "history_steps.jsonl")) as f:
        assert f.read() == ref["steps"]


CASES = [(i, "kill") for i in range(len(EPOCH_END))] + \
    [(EPOCH_END.index(n), "ctrl_c") for n in ("latest.pdstate", "best_model.pdparams")]


@pytest.mark.parametrize("index, kind", CASES, ids=[f"{k}-before-{EPOCH_END[i]}" for i, k in CASES])
def test_an_interrupt_at_each_write_of_the_last_epoch_resumes_to_the_uninterrupted_run(ref, tmp_path, monkeypatch,
                                                                                       index, kind):
    shutil.copytree(os.path.dirname(ref["half"]), tmp_path / "out")
    run = str(tmp_path / "out" / "tiny")
    resume = _cfg(tmp_path / "out", f"Global.checkpoints={run}")
    _spy(monkeypatch, run, at=8 + index + 1, kind=kind)  # after the 8 writes that start a resume
    with pytest.raises(TrainingInterrupted if kind == "ctrl_c" else Killed) as stopped:
        Engine(resume).train()
    monkeypatch.undo()
    _placeholder_plots(monkeypatch)
    if kind == "ctrl_c":  # the handler wrote whatever followed a commit: the folder is consistent now
        _assert_consistent(run, ref)
        message = str(stopped.value)
        if index > EPOCH_END.index("latest.pdstate"):  # after the last commit: the files are complete
            assert "files are complete" in message and "Global.checkpoints" not in message, message
            _assert_uninterrupted(run, ref)
            return
        assert f"-o Global.checkpoints={run}" in message, message
    Engine(_cfg(tmp_path / "out", f"Global.checkpoints={run}")).train()
    _assert_uninterrupted(run, ref)
    _assert_consistent(run, ref)


def test_eval_refuses_a_best_model_that_a_kill_left_behind_its_checkpoint(ref, tmp_path, monkeypatch):
    """Killed after the last commit, before best_model is written: best_model is epoch 1's while the state names
    epoch 2. Evaluating the run's weights is refused with the way out, until the resume has written them."""
    from ppvit.engine.checkpoint import run_weights
    from ppvit.engine.config import ConfigError

    shutil.copytree(os.path.dirname(ref["half"]), tmp_path / "out")
    run = str(tmp_path / "out" / "tiny")
    cfg = _cfg(tmp_path / "out")
    assert run_weights(cfg).endswith("best_model.pdparams")  # after epoch 1: whole
    _spy(monkeypatch, run, at=8 + EPOCH_END.index("best_model.pdparams") + 1)
    with pytest.raises(Killed):
        Engine(_cfg(tmp_path / "out", f"Global.checkpoints={run}")).train()
    monkeypatch.undo()
    _placeholder_plots(monkeypatch)
    with pytest.raises(ConfigError, match=f"may hold an earlier epoch.*-o Global.checkpoints={run}"):
        run_weights(cfg)
    Engine(_cfg(tmp_path / "out", f"Global.checkpoints={run}")).train()
    assert _same(load_state(run_weights(cfg)), ref["best"][2])


def test_a_kill_while_the_resume_rewrites_the_files_resumes_too(ref, tmp_path, monkeypatch):
    """The writes that follow a resume are write points too: a kill during them, then a resume."""
    shutil.copytree(os.path.dirname(ref["half"]), tmp_path / "out")
    run = str(tmp_path / "out" / "tiny")
    _spy(monkeypatch, run, at=4)  # before best_model.pdparams is written again
    with pytest.raises(Killed):
        Engine(_cfg(tmp_path / "out", f"Global.checkpoints={run}")).train()
    monkeypatch.undo()
    _placeholder_plots(monkeypatch)
    Engine(_cfg(tmp_path / "out", f"Global.checkpoints={run}")).train()
    _assert_uninterrupted(run, ref)


def test_a_ctrl_c_before_the_first_checkpoint_leaves_a_folder_that_the_same_command_starts(ref, tmp_path, monkeypatch):
    engine = Engine(_cfg(tmp_path))
    real_step, calls = engine.optimizer.step, []

    def step_then_interrupt():
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real_step()

    engine.optimizer.step = step_then_interrupt
    with pytest.raises(TrainingInterrupted) as stopped:
        engine.train()
    run = tmp_path / "tiny"
    assert "the same command starts the run again" in str(stopped.value), str(stopped.value)
    assert (run / "train.log").is_file() and not (run / "latest.pdstate").exists()
    Engine(_cfg(tmp_path)).train()  # not refused: nothing of the first start was worth keeping
    _assert_uninterrupted(str(run), ref)
    assert "starting the run again" in (run / "train.log").read_text()


def test_a_finished_run_with_all_its_files_is_still_not_resumed(ref, tmp_path):
    from ppvit.engine.config import ConfigError

    shutil.copytree(os.path.dirname(ref["run"]), tmp_path / "out")
    with pytest.raises(ConfigError, match="already trained all its epochs"):
        Engine(_cfg(tmp_path / "out", f"Global.checkpoints={tmp_path / 'out' / 'tiny'}"))


KILL_WHILE_WRITING_BEST = """
import os, signal, sys
sys.path.insert(0, {tests!r})
real = os.replace
commits = []
def replace(src, dst):
    if dst.endswith("latest.pdstate"):
        commits.append(dst)
    if dst.endswith("best_model.pdparams") and len(commits) == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # while the last epoch's best_model is written
    return real(src, dst)
os.replace = replace
import yaml
import ppvit.engine.trainer
ppvit.engine.trainer.plot_learning_curve = lambda *a, **k: None  # drawing is slow; not what is tested here
from ppvit.engine import Engine, load_config
cfg = yaml.safe_load(open({config!r}))
Engine(load_config(None, ["Global.output_dir=" + {out!r}], base=cfg)).train()
"""


def test_a_real_sigkill_while_best_model_is_written_is_finished_by_the_resume(ref, tmp_path):
    import yaml

    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(CFG))
    script = tmp_path / "kill.py"
    script.write_text(KILL_WHILE_WRITING_BEST.format(tests=os.path.join(ROOT, "tests"), config=str(config),
                                                     out=str(tmp_path / "out")))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run = str(tmp_path / "out" / "tiny")
    assert load_latest(run)["meta"]["best"]["epoch"] == 2
    Engine(_cfg(tmp_path / "out", f"Global.checkpoints={run}")).train()
    _assert_uninterrupted(run, ref)
