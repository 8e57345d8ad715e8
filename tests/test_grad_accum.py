"""Gradient accumulation (Optimizer.grad_accum_steps) equals one large batch, resumes exactly mid-epoch, and
the linear lr scaling (Optimizer.lr_base_size) is applied and logged."""
import itertools
import os
from unittest import mock

import numpy as np
import pytest

from ppvit.engine import Engine, load_config
from ppvit.engine.checkpoint import load_latest
from ppvit.io import load_state

# A tiny ConViT (LayerNorm, no BatchNorm: a batch's statistics do not depend on how it is split), no dropout or
# stochastic depth, no augmentation; 32 digits: 2 batches of 16 or 4 of 8 per epoch
TINY = {
    "Global": {"device": "cpu", "seed": 5, "epochs": 2, "run_name": "tiny"},
    "Arch": {"name": "convit_tiny", "num_classes": 10, "img_size": 16, "patch_size": 4, "embed_dim": 8,
             "num_heads": 2, "depth": 2, "local_up_to_layer": 1},
    # SGD: the update is linear in the gradient, so float32 rounding is not amplified (as by Adam's 1/sqrt(v))
    "Optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9, "weight_decay": 1.0e-4, "warmup_epochs": 0.5},
    "Data": {"dataset": "digits", "transform": "basic", "limit": 32, "batch_size": 16, "eval_batch_size": 32,
             "num_workers": 0},
}


def _cfg(out, *extra):
    return load_config(None, [f"Global.output_dir={out}", *extra], base=TINY)


def _weights(out):
    return load_state(os.path.join(out, "tiny", "final_model.pdparams"))


def _max_diff(a, b):
    assert a.keys() == b.keys()
    return max(float(np.abs(a[k].astype(np.float64) - b[k]).max()) for k in a)


def _ctrl_c_at(n, step):
    """``step`` that raises KeyboardInterrupt (Ctrl-C) instead at its ``n``-th call."""
    calls = itertools.count(1)

    def wrapped():
        if next(calls) == n:
            raise KeyboardInterrupt
        step()
    return wrapped


def test_accumulating_two_half_batches_equals_one_batch(tmp_path):
    # lr 0.1 for a global batch of 32 (linear scaling): 0.05 for the effective batch of 16 of both runs
    scaling = ("Optimizer.lr=0.1", "Optimizer.lr_base_size=32")
    Engine(_cfg(tmp_path / "big", *scaling)).train()
    accum = Engine(_cfg(tmp_path / "accum", *scaling, "Data.batch_size=8", "Optimizer.grad_accum_steps=2"))
    assert (accum.steps_per_epoch, accum.updates_per_epoch, accum.global_batch) == (4, 2, 16)
    accum.train()
    assert _max_diff(_weights(tmp_path / "big"), _weights(tmp_path / "accum")) <= 1e-6
    with open(tmp_path / "accum" / "tiny" / "train.log", encoding="utf-8") as f:
        log = f.read()
    assert ("batch 8 x1 x2 accumulated = effective batch 16, 4 steps/epoch (2 optimizer steps) | "
            "SGD lr 0.1 x 16/32 = 0.05 (cosine)") in log


def test_resume_mid_epoch_with_accumulation_is_exact(tmp_path):
    extra = ("Data.batch_size=8", "Optimizer.grad_accum_steps=2")
    straight = Engine(_cfg(tmp_path / "a", *extra))
    straight.train()

    # a mid-epoch checkpoint after the optimizer step that completes batch 2 of epoch 2 (global batch 6), then an
    # interrupt at the next optimizer step
    first = Engine(_cfg(tmp_path / "b", *extra, "Global.save_interval=5"))
    with mock.patch.object(first.optimizer, "step", side_effect=_ctrl_c_at(4, first.optimizer.step)):
        with pytest.raises(KeyboardInterrupt):
            first.train()
    run_b = os.path.join(tmp_path, "b", "tiny")
    meta = load_latest(run_b)["meta"]
    assert (meta["epoch"], meta["batch"], meta["global_step"]) == (1, 2, 6)  # at an optimizer step, not mid-group

    resumed = Engine(_cfg(tmp_path / "b", *extra, f"Global.checkpoints={run_b}"))
    history = resumed.train()
    assert _max_diff(_weights(tmp_path / "a"), _weights(tmp_path / "b")) <= 1e-6
    assert history["steps"]["loss"] == pytest.approx(straight.history.steps["loss"], abs=1e-6)


def test_linear_lr_scaling_uses_the_effective_batch(tmp_path):
    engine = Engine(_cfg(tmp_path, "Data.batch_size=8", "Optimizer.grad_accum_steps=4", "Optimizer.lr_base_size=512",
                         "Optimizer.warmup_epochs=0", "Optimizer.scheduler=constant"))
    assert engine.global_batch == 32
    assert engine.scheduler.base_lr == pytest.approx(0.05 * 32 / 512)
    assert engine.optimizer.get_lr() == pytest.approx(0.05 * 32 / 512)
    # without lr_base_size, Optimizer.lr is the lr
    plain = Engine(_cfg(tmp_path / "plain", "Data.batch_size=8", "Optimizer.grad_accum_steps=4"))
    assert plain.scheduler.base_lr == pytest.approx(0.05)
