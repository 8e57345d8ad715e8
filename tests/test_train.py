"""Training end to end: a quick-start-like run, every notebook config on the embedded digits data, the
eval tool, and a non-finite loss."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import ppvit
from ppvit.commands.evaluate import evaluate
from ppvit.engine import Engine, load_config, train
from ppvit.engine.checkpoint import load_latest
from ppvit.io import load_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
SMOKE = ["Data.dataset=digits", "Data.limit=64", "Global.epochs=1"]
# 224-pixel recipes are minutes per step on this CPU: their smoke runs use 64x64 inputs (model and data
# together), everything else as in the file.
SMALLER = {
    "convit_small": ["Arch.img_size=64"],
    "dilateformer_t": ["Arch.img_size=64"],
    "dilateformer_s": ["Arch.img_size=64"],
    "dilateformer_b": ["Arch.img_size=64"],
    "coatnet_0": ["Arch.img_size=64"],
}
RUN_FILES = ["best_model.pdparams", "best_model.pdopt", "final_model.pdparams", "final_model.pdopt",
             "latest.pdparams", "latest.pdopt", "latest.pdstate", "train.log", "history.json", "history_steps.jsonl",
             "loss_curve.png",
             "acc_curve.png", "config.yaml"]


def test_quickstart_like_run_learns(tmp_path):
    """configs/quickstart.yaml on a part of the digits data: 4 epochs reach well above chance."""
    hist = train(os.path.join(CONFIGS, "quickstart.yaml"),
                 [f"Global.output_dir={tmp_path}", "Global.epochs=4", "Data.limit=640"])
    run = tmp_path / "quickstart"
    assert sorted(RUN_FILES) == sorted(f for f in os.listdir(run) if not f.startswith("."))
    top1 = hist["epochs"]["val_top1"]
    assert len(top1) == 4 and max(top1) >= 0.6, top1
    assert hist["epochs"]["train_loss"][-1] < hist["epochs"]["train_loss"][0]
    steps = hist["steps"]
    assert steps["step"] == list(range(1, 4 * 10 + 1))  # 640 // 64 batches per epoch, every step logged
    saved = json.loads((run / "history.json").read_text())
    assert saved["epochs"]["val_top1"] == pytest.approx(top1) and saved["best"]["top1"] == pytest.approx(max(top1))
    log = (run / "train.log").read_text()
    assert "epoch 4/4 | train loss" in log and "step 10/10" in log
    # best_model holds the best epoch's weights, final_model the last epoch's, and both load into the model
    model = ppvit.create_model("convmixer_256_8", num_classes=10, dim=64, depth=4,
                               pretrained=str(run / "final_model.pdparams"))
    assert model is not None
    final, latest = load_state(run / "final_model.pdparams"), load_state(run / "latest.pdparams")
    assert all(np.array_equal(final[k], latest[k]) for k in final)


@pytest.mark.parametrize("name", ["conv2former_n_cifar", "convit_small", "dilateformer_t", "dilateformer_s",
                                  "dilateformer_b", "coatnet_0", "convmixer_256_8"])
def test_notebook_config_runs_end_to_end(name, tmp_path):
    path = os.path.join(CONFIGS, f"{name}.yaml")
    cfg = load_config(path, SMOKE + SMALLER.get(name, []) + [f"Global.output_dir={tmp_path}"])
    engine = Engine(cfg)
    hist = engine.train()
    run = tmp_path / name
    for f in RUN_FILES:
        assert (run / f).is_file(), f
    assert len(hist["epochs"]["epoch"]) == 1 and np.isfinite(hist["epochs"]["val_loss"][0])
    # one step per epoch (64 images in one partial batch, or batches of 64 for convit)
    assert hist["steps"]["step"][-1] == engine.steps_per_epoch
    meta = load_latest(run)["meta"]
    assert (meta["epoch"], meta["global_step"]) == (1, engine.steps_per_epoch)
    weights = load_state(run / "final_model.pdparams")
    assert weights.keys() == engine.model.state_dict().keys()


def _tool(tool, *args, cwd=None):
    return subprocess.run([sys.executable, os.path.join(ROOT, "tools", tool), *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd, env=dict(os.environ, OMP_NUM_THREADS="2"))


def test_eval_tool_reports_per_class_accuracy_and_confusion_matrix(tmp_path):
    cfg = os.path.join(CONFIGS, "quickstart.yaml")
    common = ["-o", f"Global.output_dir={tmp_path}", "-o", "Data.limit=128"]
    res = _tool("train.py", "-c", cfg, *common, "-o", "Global.epochs=1")
    assert res.returncode == 0, res.stderr[-3000:]
    weights = tmp_path / "quickstart" / "best_model.pdparams"
    res = _tool("eval.py", "-c", cfg, *common, "-o", f"Global.pretrained_model={weights}")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "top-1" in res.stdout and "top-5" in res.stdout
    for digit in range(10):
        assert f"\n{digit} " in res.stdout  # one table row per class
    result = json.loads((tmp_path / "quickstart" / "eval.json").read_text())
    assert result["count"] == 128 and np.array(result["confusion"]).sum() == 128
    assert np.trace(result["confusion"]) / 128 == pytest.approx(result["top1"])
    assert (tmp_path / "quickstart" / "confusion_matrix.png").stat().st_size > 1000
    # the in-process API gives the same numbers
    metrics = evaluate(cfg, ["Global.output_dir=" + str(tmp_path), "Data.limit=128",
                             f"Global.pretrained_model={weights}"])
    assert metrics["top1"] == pytest.approx(result["top1"]) and metrics["loss"] == pytest.approx(result["loss"], rel=1e-5)


def test_non_finite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = os.path.join(CONFIGS, "quickstart.yaml")
    common = ["-o", f"Global.output_dir={tmp_path}", "-o", "Data.limit=256", "-o", "Optimizer.scheduler=constant"]
    res = _tool("train.py", "-c", cfg, *common, "-o", "Global.epochs=1")
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "quickstart"
    before = {f: (run / f).read_bytes() for f in ("latest.pdstate", "latest.pdparams", "best_model.pdparams",
                                                  "final_model.pdparams", "history.json")}
    # extend the run by a second epoch with an absurd learning rate: the loss explodes within a few steps
    res = _tool("train.py", "-c", cfg, *common, "-o", "Global.epochs=2", "-o", "Optimizer.lr=1e30",
                "-o", f"Global.checkpoints={run}", "-o", "Global.extend=true")
    assert res.returncode == 1, res.stderr[-3000:]
    assert "non-finite loss" in res.stderr and "at epoch 2/2 step" in res.stderr
    assert f"the last good checkpoint is {run / 'latest.pdstate'}" in res.stderr
    assert "Traceback" not in res.stderr
    assert "non-finite loss" in (run / "train.log").read_text()
    for f, data in before.items():
        assert (run / f).read_bytes() == data, f"{f} was rewritten"


TINY = {
    "Global": {"device": "cpu", "seed": 5, "epochs": 2, "run_name": "tiny"},
    "Arch": {"name": "convmixer_256_8", "num_classes": 10, "img_size": 16, "dim": 16, "depth": 2},
    "Optimizer": {"name": "SGD", "lr": 0.05, "momentum": 0.9, "weight_decay": 1.0e-4, "grad_clip": 1.0},
    "Data": {"dataset": "digits", "transform": "basic", "limit": 64, "batch_size": 16,
             "eval_batch_size": 64, "cutmix_alpha": 1.0, "mixup_alpha": 0.2},
}


def test_ema_sgd_clipping_and_mixing(tmp_path):
    """EMA weights are what gets evaluated and saved as best/final; the raw weights stay in `latest`."""
    engine = Engine(load_config(None, [f"Global.output_dir={tmp_path}", "Global.ema_decay=0.5"], base=TINY))
    assert engine.mixer is not None and engine.ema is not None
    hist = engine.train()
    run = tmp_path / "tiny"
    final, raw = load_state(run / "final_model.pdparams"), load_state(run / "latest.pdparams")
    ema = {k: v.numpy() for k, v in engine.ema.module.state_dict().items()}
    assert all(np.array_equal(final[k], ema[k]) for k in final)
    assert any(not np.allclose(final[k], raw[k]) for k in final if k.endswith("weight"))
    state = load_latest(run)
    assert state["ema"] is not None and state["meta"]["mixer_rng"] is not None
    assert all(np.isfinite(hist["steps"]["loss"]))


def test_console_log_lines_follow_sys_stdout_after_a_redirect_closes(capsys):
    """The console handler writes to the *current* sys.stdout: set up while stdout was redirected (a notebook
    cell, pytest's capture) it must neither fail on the closed stream later nor lose the line."""
    import contextlib
    import io
    import logging

    from ppvit.engine.logger import close_logging, get_logger, setup_logging

    errors = []
    real_handle_error = logging.Handler.handleError
    logging.Handler.handleError = lambda self, record: errors.append(record)
    try:
        early = io.StringIO()
        with contextlib.redirect_stdout(early):
            setup_logging()
            get_logger().info("inside the redirect")
        early.close()
        get_logger().info("after the redirect closed")
    finally:
        logging.Handler.handleError = real_handle_error
        close_logging()
    assert not errors
    assert "after the redirect closed" in capsys.readouterr().out
