"""Resume restores everything: 2 epochs straight == 1 epoch + resume, and a SIGKILLed run resumes."""
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import yaml

from ppvit.engine import Engine, load_config
from ppvit.engine.checkpoint import load_latest
from ppvit.io import load_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A tiny Conv2Former with stochastic depth and notebook 000's random augmentation, so that the paddle,
# numpy and python RNG streams all matter; 3 batches per epoch, on the CPU, in the main process.
TINY = {
    "Global": {"device": "cpu", "seed": 7, "epochs": 2, "run_name": "tiny"},
    "Arch": {"name": "conv2former_n_cifar", "num_classes": 10, "dims": [8, 16], "depths": [1, 1],
             "kernel_size": 3, "drop_path_rate": 0.2, "img_size": 16},
    "Loss": {"name": "LabelSmoothingCrossEntropy", "smoothing": 0.1},
    "Optimizer": {"name": "Adam", "lr": 0.003, "weight_decay": 1.0e-4, "scheduler": "cosine",
                  "warmup_epochs": 0.5},
    "Data": {"dataset": "digits", "transform": "conv2former_cifar", "limit": 48,
             "batch_size": 16, "eval_batch_size": 48, "num_workers": 0},
}


def _cfg(out, *extra):
    return load_config(None, [f"Global.output_dir={out}", *extra], base=TINY)


def _weights(run):
    return load_state(os.path.join(run, "final_model.pdparams"))


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    worst = max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)
    assert worst <= 1e-6, f"resumed weights differ by {worst}"


def test_resume_after_an_epoch_gives_the_same_weights(tmp_path):
    straight = Engine(_cfg(tmp_path / "a", "Global.epochs=2"))
    history = straight.train()
    assert len(history["epochs"]["epoch"]) == 2

    first = Engine(_cfg(tmp_path / "b", "Global.epochs=2"))
    first.train(until_epoch=1)
    run_b = os.path.join(tmp_path, "b", "tiny")
    assert not os.path.exists(os.path.join(run_b, "final_model.pdparams"))
    resumed = Engine(_cfg(tmp_path / "b", "Global.epochs=2", f"Global.checkpoints={run_b}"))
    assert (resumed.start_epoch, resumed.start_batch, resumed.global_step) == (1, 0, 3)
    resumed_history = resumed.train()

    _assert_same_weights(_weights(os.path.join(tmp_path, "a", "tiny")), _weights(run_b))
    # the optimizer moments and the history continue too
    assert resumed_history["steps"]["loss"] == pytest.approx(history["steps"]["loss"], abs=1e-6)
    assert resumed_history["epochs"]["val_top1"] == pytest.approx(history["epochs"]["val_top1"])
    assert resumed.best == straight.best


def test_resume_mid_epoch_from_the_latest_prefix(tmp_path):
    """save_interval writes `latest` inside an epoch; resuming there replays exactly the remaining batches."""
    straight = Engine(_cfg(tmp_path / "a", "Global.epochs=2"))
    straight.train()

    # interrupt the second run during step 5 (epoch 2, batch 2), after the mid-epoch checkpoint of step 4
    first = Engine(_cfg(tmp_path / "b", "Global.epochs=2", "Global.save_interval=4"))
    real_step, calls = first.optimizer.step, []

    def step_then_interrupt():
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        real_step()

    first.optimizer.step = step_then_interrupt
    with pytest.raises(KeyboardInterrupt):
        first.train()
    run_b = os.path.join(tmp_path, "b", "tiny")
    meta = load_latest(run_b)["meta"]
    assert (meta["epoch"], meta["batch"], meta["global_step"]) == (1, 1, 4)

    resumed = Engine(_cfg(tmp_path / "b", "Global.epochs=2", f"Global.checkpoints={run_b}/latest"))
    assert (resumed.start_epoch, resumed.start_batch) == (1, 1)
    history = resumed.train()
    _assert_same_weights(_weights(os.path.join(tmp_path, "a", "tiny")), _weights(run_b))
    assert history["epochs"]["train_loss"] == pytest.approx(straight.history.epochs["train_loss"], abs=1e-6)


def _train_cmd(out, *extra):
    config = os.path.join(os.path.dirname(os.fspath(out)), "tiny.yaml")
    with open(config, "w") as f:
        yaml.safe_dump(TINY, f)
    args = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "-c", config]
    for o in [f"Global.output_dir={out}", *extra]:
        args += ["-o", o]
    return args


def _env():
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")


def test_sigkill_mid_run_then_resume(tmp_path):
    """SIGKILL the CLI right after the checkpoint of step 4 is committed (checkpointing every step; the kill comes
    from inside the process, so no timing decides where it lands): the checkpoint loads, and resuming from it
    finishes with the weights of an uninterrupted run."""
    epochs = ["Global.epochs=4", "Global.save_interval=1"]
    ref = subprocess.run(_train_cmd(tmp_path / "ref", *epochs), env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert ref.returncode == 0, ref.stderr[-2000:]

    run = os.path.join(tmp_path, "killed", "tiny")
    killed = _train_cmd(tmp_path / "killed", *epochs)
    killed[1:2] = [os.path.join(ROOT, "tests", "workers", "train_killed_at_step.py"), "4"]
    proc = subprocess.run(killed, env=dict(_env(), PYTHONPATH=ROOT), capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    state = load_latest(run)  # whole, whatever the moment of the kill
    step = state["meta"]["global_step"]
    assert step == 4
    assert not os.path.exists(os.path.join(run, "final_model.pdparams"))

    res = subprocess.run(_train_cmd(tmp_path / "killed", *epochs, f"Global.checkpoints={run}"), env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resumed from" in res.stdout
    _assert_same_weights(_weights(os.path.join(tmp_path, "ref", "tiny")), _weights(run))
