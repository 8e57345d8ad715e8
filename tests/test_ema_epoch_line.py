"""With Global.ema_decay the epoch line says that the EMA weights were validated (they are the ones ranked and
saved as best/final), and reports the raw weights' top-1 beside them; history.json keeps both, as timm logs both."""
import json

import pytest

from ppvit import create_model
from ppvit.engine import Engine, load_config
from ppvit.engine.evaluator import evaluate
from ppvit.io import load_state

from runs import TINY


def _top1(engine, weights):
    model = create_model("convmixer_256_8", num_classes=10, dim=16, depth=2, img_size=16)
    model.set_state_dict(load_state(weights))
    return evaluate(model, engine.eval_loader, engine.eval_loss_fn, 10)["top1"]


@pytest.mark.parametrize("ema", [0.5, None], ids=["ema", "no-ema"])
def test_the_epoch_line_names_the_validated_weights(tmp_path, ema):
    engine = Engine(load_config(None, [f"Global.output_dir={tmp_path}", "Global.epochs=1",
                                       f"Global.ema_decay={'null' if ema is None else ema}"], base=TINY))
    engine.train()
    run = tmp_path / "tiny"
    line = [r for r in (run / "train.log").read_text().splitlines() if "epoch 1/1 | train loss" in r][0]
    epochs = json.loads((run / "history.json").read_text())["epochs"]
    ema_top1 = _top1(engine, run / "final_model.pdparams")  # the weights validated and saved
    assert epochs["val_top1"] == [pytest.approx(ema_top1)]
    if ema is None:
        assert "val loss" in line and "EMA" not in line and "raw" not in line, line
        assert epochs["val_top1_raw"] == [None]
        return
    raw_top1 = _top1(engine, run / "latest.pdparams")  # the raw weights at the same step
    assert "val (EMA weights) loss" in line and f"top-1 {100 * ema_top1:.2f}%" in line, line
    assert f"raw weights top-1 {100 * raw_top1:.2f}%" in line, line
    assert epochs["val_top1_raw"] == [pytest.approx(raw_top1)]
