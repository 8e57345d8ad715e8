"""What a resume accepts ("one run state"): a config change that alters the remaining computation is
refused before anything is written, naming the keys; keys that cannot change the result are accepted; a
changed learning rate applies from the first resumed step; extending a finished run is an explicit choice
(``Global.extend``) with a defined schedule."""
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from ppvit.engine import Engine, load_config
from ppvit.io import load_state
from tests.runs import ok, one_error, snapshot, tool, write_config

# (id, run to resume: "done" (2/2 epochs) or "half" (1/2 epochs), overrides, words the error must contain)
REFUSED = [
    ("optimizer-type", "half", ["Optimizer.name=SGD"], ["Optimizer.name", "AdamW", "SGD"]),
    ("batch-size", "half", ["Data.batch_size=8"], ["Data.batch_size", "16", "8"]),
    ("data-limit", "half", ["Data.limit=32"], ["Data.limit"]),
    ("model-kwarg", "half", ["Arch.kernel_size=3"], ["Arch.kernel_size"]),
    ("model-drop-path", "half", ["Arch.drop_path_rate=0.1"], ["Arch.drop_path_rate"]),
    ("loss", "half", ["Loss.name=LabelSmoothingCrossEntropy"], ["Loss.name"]),
    ("mixup", "half", ["Data.mixup_alpha=0.2"], ["Data.mixup_alpha"]),
    ("transform", "half", ["Data.transform=conv2former_cifar"], ["Data.transform"]),
    ("seed", "half", ["Global.seed=4"], ["Global.seed"]),
    ("schedule", "half", ["Optimizer.scheduler=constant"], ["Optimizer.scheduler"]),
    ("weight-decay", "half", ["Optimizer.weight_decay=0.1"], ["Optimizer.weight_decay"]),
    ("two-keys", "half", ["Optimizer.name=SGD", "Global.seed=4"], ["Optimizer.name", "Global.seed"]),
    ("epochs-changed-mid-run", "half", ["Global.epochs=3"], ["Global.epochs"]),
    ("extend-unfinished", "half", ["Global.epochs=3", "Global.extend=true"], ["Global.extend", "1/2"]),
    ("fewer-epochs", "done", ["Global.epochs=1"], ["Global.epochs", "2"]),
    ("more-epochs-unasked", "done", ["Global.epochs=4"], ["Global.extend=true"]),
    ("nothing-left", "done", [], ["already", "2/2"]),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume_rules")
    config = write_config(tmp)
    out = str(tmp / "out")
    # "done": 2 epochs straight through the CLI; "half": the same config stopped after epoch 1
    ok(tool("train.py", config, [f"Global.output_dir={out}", "Global.run_name=done"]))
    Engine(load_config(config, [f"Global.output_dir={out}", "Global.run_name=half"])).train(until_epoch=1)
    done, half = os.path.join(out, "done"), os.path.join(out, "half")
    before = snapshot(out)

    def resume(case):
        _, which, overrides, _ = case
        return tool("train.py", config, [f"Global.output_dir={out}", f"Global.run_name={which}",
                                         f"Global.checkpoints={os.path.join(out, which)}", *overrides])

    with ThreadPoolExecutor(max_workers=3) as pool:
        results = dict(zip([c[0] for c in REFUSED], pool.map(resume, REFUSED)))
    return {"tmp": tmp, "config": config, "out": out, "done": done, "half": half, "before": before,
            "after": snapshot(out), "results": results}


@pytest.mark.parametrize("case", REFUSED, ids=[c[0] for c in REFUSED])
def test_a_resume_that_changes_the_run_is_refused_naming_the_keys(runs, case):
    err = one_error(runs["results"][case[0]])
    for word in case[3]:
        assert word in err, err
    assert "Global.checkpoints" in err or "Global.run_name" in err, err  # how to proceed


def test_a_refused_resume_writes_nothing(runs):
    assert runs["after"] == runs["before"]


def _copy(runs, which, name):
    dst = os.path.join(runs["out"], name)
    shutil.copytree(runs[which], dst)
    return dst


def _history(run):
    """history.json with the steps of history_steps.jsonl."""
    from ppvit.engine.state import read_history

    return read_history(run)


def test_harmless_changes_are_accepted_and_give_the_uninterrupted_weights(runs):
    """eval batch size, workers, print interval, output folder: the resumed run ends exactly as the straight one."""
    run = _copy(runs, "half", "harmless")
    # another run name too: a resume continues in its run's folder
    ok(tool("train.py", runs["config"], [f"Global.output_dir={runs['out']}", "Global.run_name=elsewhere",
                                         f"Global.checkpoints={run}", "Data.eval_batch_size=7",
                                         "Data.num_workers=1", "Global.print_interval=1"]))
    assert not os.path.exists(os.path.join(runs["out"], "elsewhere"))
    a, b = load_state(os.path.join(runs["done"], "final_model.pdparams")), load_state(os.path.join(run, "final_model.pdparams"))
    assert a.keys() == b.keys()
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-6
    assert _history(run)["epochs"]["val_loss"] == pytest.approx(_history(runs["done"])["epochs"]["val_loss"], abs=1e-5)


def test_a_changed_lr_applies_from_the_first_resumed_step(runs):
    run = _copy(runs, "half", "new_lr")
    proc = ok(tool("train.py", runs["config"], [f"Global.output_dir={runs['out']}", "Global.run_name=new_lr",
                                                f"Global.checkpoints={run}", "Optimizer.lr=0.02"]))
    assert "Optimizer.lr" in proc.stdout + proc.stderr  # the change is said
    lrs, straight = _history(run)["steps"]["lr"], _history(runs["done"])["steps"]["lr"]
    assert lrs[:4] == pytest.approx(straight[:4])  # epoch 1, as it ran
    # cosine with eta_min 0 scales with the base lr: every resumed step, the first included, uses 0.02
    assert lrs[4:] == pytest.approx([2 * x for x in straight[4:]], rel=1e-6)


def test_extending_a_finished_run_restarts_the_schedule_over_the_added_epochs(runs):
    run = _copy(runs, "done", "extended")
    proc = ok(tool("train.py", runs["config"], [f"Global.output_dir={runs['out']}", "Global.run_name=extended",
                                                f"Global.checkpoints={run}", "Global.epochs=4", "Global.extend=true"]))
    assert "extend" in proc.stdout.lower()
    h, straight = _history(run), _history(runs["done"])
    assert h["epochs"]["epoch"] == [1, 2, 3, 4]
    assert h["steps"]["step"] == list(range(1, 17))
    assert h["steps"]["lr"][:8] == pytest.approx(straight["steps"]["lr"][:8])
    # epochs 3-4: a fresh cosine over their 8 steps, from Optimizer.lr down
    added = h["steps"]["lr"][8:]
    expected = [0.01 * (1 + np.cos(np.pi * t / 8)) / 2 for t in range(8)]
    assert added == pytest.approx(expected, rel=1e-6)
    # the extension can itself be resumed: stop it after epoch 3 and resume to the same weights
    again = _copy(runs, "done", "extended_again")
    cfg = load_config(runs["config"], [f"Global.output_dir={runs['out']}", "Global.run_name=extended_again",
                                       f"Global.checkpoints={again}", "Global.epochs=4", "Global.extend=true"])
    Engine(cfg).train(until_epoch=3)
    ok(tool("train.py", runs["config"], [f"Global.output_dir={runs['out']}", "Global.run_name=extended_again",
                                         f"Global.checkpoints={again}", "Global.epochs=4"]))
    a = load_state(os.path.join(run, "final_model.pdparams"))
    b = load_state(os.path.join(again, "final_model.pdparams"))
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a) <= 1e-6


def test_the_python_api_refuses_too(runs):
    from ppvit.engine import ConfigError

    cfg = load_config(runs["config"], [f"Global.output_dir={runs['out']}", "Global.run_name=half",
                                       f"Global.checkpoints={runs['half']}", "Optimizer.name=SGD"])
    with pytest.raises(ConfigError, match="Optimizer.name"):
        Engine(cfg)


def test_which_keys_a_resume_may_change():
    """The classification itself: computation keys are "same", the learning rate "lr", paths/logging "free"."""
    from ppvit.engine.config import resume_changes
    from tests.runs import TINY

    saved = load_config(None, [], base=TINY)
    new = load_config(None, ["Global.device=auto", "Global.output_dir=elsewhere", "Global.print_interval=1",
                             "Data.num_workers=2", "Eval.grid_images=0", "Optimizer.lr=0.5",
                             "Optimizer.weight_decay=0.5", "Arch.drop_path_rate=0.1", "Global.epochs=9"], base=TINY)
    changes = resume_changes(saved, new)
    assert {k for k, _, _ in changes["same"]} == {"Optimizer.weight_decay", "Arch.drop_path_rate"}
    assert [k for k, _, _ in changes["lr"]] == ["Optimizer.lr"]
    assert {k for k, _, _ in changes["free"]} == {"Global.device", "Global.output_dir", "Global.print_interval",
                                                 "Data.num_workers", "Eval.grid_images"}
