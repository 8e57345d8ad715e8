"""The learning rate a training run reports is the one its steps used: every step line, the epoch summary (the
lr of the epoch's last step), history.json (per step and per epoch) agree with the schedule's closed form, and
every lr is printed in one notation (positional, 6 significant digits), small values included."""
import json
import math
import re

import pytest

from ppvit.engine import train
from ppvit.engine.state import read_history
from tests.runs import TINY, write_config

BASE_LR, SPE, EPOCHS, WARMUP = 0.001, 4, 3, 4  # 8 images in batches of 2: 4 steps per epoch, 1 warmup epoch


def reference_lr(i):
    """The lr of global step ``i`` (0-based): linear warmup over WARMUP steps, then cosine to 0 (optim.py's
    formula, written out here)."""
    if i < WARMUP:
        return BASE_LR * (i + 1) / WARMUP
    span = SPE * EPOCHS - WARMUP
    return BASE_LR * (1 + math.cos(math.pi * (i - WARMUP) / span)) / 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lr")
    cfg = json.loads(json.dumps(TINY))
    cfg["Global"].update(epochs=EPOCHS, print_interval=1, output_dir=str(tmp / "out"))
    cfg["Optimizer"].update(lr=BASE_LR, warmup_epochs=1.0)
    cfg["Data"].update(limit=8, batch_size=2, eval_batch_size=8)
    hist = train(write_config(tmp, cfg))
    folder = tmp / "out" / "tiny"
    return {"hist": hist, "log": (folder / "train.log").read_text(encoding="utf-8"),
            "saved": read_history(str(folder))}  # history.json with history_steps.jsonl


def test_history_records_the_lr_each_step_used(run):
    expected = [reference_lr(i) for i in range(SPE * EPOCHS)]
    for hist in (run["hist"], run["saved"]):
        assert hist["steps"]["lr"] == pytest.approx(expected, rel=1e-6)
        # an epoch's lr is that of its last step, not the next epoch's first
        assert hist["epochs"]["lr"] == pytest.approx([expected[SPE * (k + 1) - 1] for k in range(EPOCHS)], rel=1e-6)


def test_log_lines_print_the_lr_used_in_one_notation(run):
    steps = re.findall(r"epoch (\d+)/\d+ step (\d+)/\d+ lr (\S+) ", run["log"])
    summaries = re.findall(r"epoch (\d+)/\d+ \| train loss .*?\| lr (\S+) \|", run["log"])
    assert len(steps) == SPE * EPOCHS and len(summaries) == EPOCHS, run["log"][-3000:]
    last_step_text = {}
    for epoch, step, text in steps:
        i = (int(epoch) - 1) * SPE + int(step) - 1
        assert re.fullmatch(r"\d+(\.\d+)?", text), f"lr {text!r} of step {i + 1} is not positional"
        assert float(text) == pytest.approx(reference_lr(i), rel=5e-6), (i, text)
        last_step_text[epoch] = text
    assert reference_lr(SPE * EPOCHS - 1) < 1e-4  # the case where :.6g would switch to 3.80602e-05
    for epoch, text in summaries:
        assert text == last_step_text[epoch], (epoch, text, last_step_text[epoch])
