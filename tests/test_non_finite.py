"""Non-finite anywhere stops cleanly: a NaN validation loss (with a finite training loss) or
non-finite weights stop the run with a message naming where, on its own line, saying what was kept and how
to go on; the last good ``latest`` stays as it was; every JSON file ppvit writes is strict JSON."""
import json
import os
import shutil

import numpy as np
import paddle
import pytest

from ppvit.engine import Engine, load_config
from tests.runs import one_error, ok, snapshot, tool, write_config


def strict_json(path):
    """Parse as a strict JSON reader does: NaN and Infinity are not JSON."""
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not JSON")

    with open(path, encoding="utf-8") as f:
        return json.loads(f.read(), parse_constant=refuse)


@pytest.fixture(scope="module")
def half(tmp_path_factory):
    """A tiny BatchNorm run stopped after epoch 1 of 2 (its ``latest`` is the resume point)."""
    tmp = tmp_path_factory.mktemp("non_finite")
    config = write_config(tmp)
    out = str(tmp / "out")
    Engine(load_config(config, [f"Global.output_dir={out}", "Global.run_name=half"])).train(until_epoch=1)
    return {"tmp": tmp, "config": config, "out": out, "run": os.path.join(out, "half")}


def _corrupt_copy(half, name, value):
    """A copy of the half run whose resume point has every BatchNorm running variance set to ``value``:
    training (batch statistics) stays finite, evaluation (running statistics) does not."""
    run = os.path.join(half["out"], name)
    shutil.copytree(half["run"], run)
    path = os.path.join(run, "latest.pdstate")
    state = paddle.load(path)
    keys = [k for k in state["model"] if k.endswith("_variance")]
    assert keys
    for k in keys:
        state["model"][k] = paddle.full(state["model"][k].shape, value, dtype="float32")
    paddle.save(state, path)
    return run, keys


def _resume(half, run):
    return tool("train.py", half["config"], [f"Global.output_dir={half['out']}",
                                             f"Global.run_name={os.path.basename(run)}", f"Global.checkpoints={run}"])


@pytest.mark.parametrize("value, where", [(-1e6, "validation loss"), (float("inf"), "weights")],
                         ids=["nan-validation", "inf-weights"])
def test_non_finite_validation_or_weights_stop_the_run(half, value, where):
    run, keys = _corrupt_copy(half, f"bad_{where.split()[0]}", value)
    before = snapshot(run)
    proc = _resume(half, run)
    err = one_error(proc, code=1)
    assert "non-finite" in err and where in err and "epoch 2/2" in err, err
    if where == "weights":
        assert any(k in err for k in keys), err  # names the tensor
    # what was kept and how to go on
    assert os.path.join(run, "latest.pdstate") in err and "Global.checkpoints" in err, err
    after = snapshot(run)
    # nothing was committed: the checkpoint and history are the epoch-1 files; no final_model (latest.pdparams/.pdopt
    # and best_model follow the committed checkpoint, which a resume writes them from first: here the test's
    # corrupted copy of it)
    assert after["latest.pdstate"] == before["latest.pdstate"]
    with open(os.path.join(run, "history.json"), encoding="utf-8") as f:
        assert json.load(f)["epochs"]["epoch"] == [1]  # the failing epoch 2 is not in it
    assert "final_model.pdparams" not in after
    strict_json(os.path.join(run, "history.json"))
    with open(os.path.join(run, "train.log"), encoding="utf-8") as f:
        assert "non-finite" in f.read()


def test_non_finite_training_loss_message_is_on_its_own_line_and_says_how_to_resume(half):
    run = os.path.join(half["out"], "diverge")
    shutil.copytree(half["run"], run)
    proc = tool("train.py", half["config"], [f"Global.output_dir={half['out']}", "Global.run_name=diverge",
                                             f"Global.checkpoints={run}", "Optimizer.lr=1e30"])
    err = one_error(proc, code=1)
    assert "non-finite loss" in err and "epoch 2/2" in err
    assert os.path.join(run, "latest.pdstate") in err and "Global.checkpoints" in err, err


def test_eval_json_is_strict_when_the_metrics_are_not_finite(half, tmp_path):
    """tools/eval.py on weights whose running variances are negative: the loss is NaN; eval.json says null."""
    weights = paddle.load(os.path.join(half["run"], "latest.pdparams"))
    for k in weights:
        if k.endswith("_variance"):
            weights[k] = paddle.full(weights[k].shape, -1e6, dtype="float32")
    path = str(tmp_path / "negative_variance.pdparams")
    paddle.save(weights, path)
    proc = tool("eval.py", half["config"], [f"Global.output_dir={tmp_path}", f"Global.pretrained_model={path}"])
    ok(proc)
    assert "nan" in proc.stdout.lower() or "non-finite" in (proc.stdout + proc.stderr).lower()
    result = strict_json(os.path.join(tmp_path, "tiny", "eval.json"))
    assert result["loss"] is None


def test_history_json_is_strict_json(half):
    data = strict_json(os.path.join(half["run"], "history.json"))
    assert data["epochs"]["epoch"] == [1]
    assert np.isfinite(data["epochs"]["val_loss"][0])
