"""Weights are loaded strictly wherever no training follows (issue 9): eval, export and explain refuse weights
whose head (or any key) does not fit, with one error naming the mismatch and nothing written; only training
from ``Global.pretrained_model`` re-initialises a differing head, and says so."""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import ppvit
from tests.runs import ok, one_error, snapshot, tool, write_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("strict")
    config = write_config(tmp)
    out = str(tmp / "out")
    ok(tool("train.py", config, [f"Global.output_dir={out}", "Global.epochs=1"]))
    run = os.path.join(out, "tiny")
    weights = os.path.join(run, "best_model.pdparams")
    # a headless checkpoint of the same backbone (num_classes=0: no classifier keys)
    headless = os.path.join(tmp, "headless.pdparams")
    model = ppvit.create_model("convmixer_256_8", num_classes=0, dim=16, depth=2)
    ppvit.io.save_state(model.state_dict(), headless)
    return {"tmp": tmp, "config": config, "out": out, "run": run, "weights": weights, "headless": headless}


def _cases(d):
    w, o = d["weights"], [f"Global.output_dir={d['out']}"]
    return [
        # (id, tool, overrides, words the error must contain)
        ("eval-12-classes", "eval.py", o + [f"Global.pretrained_model={w}", "Arch.num_classes=12"],
         ["num_classes", "shape mismatch", w]),
        ("eval-best-model-default", "eval.py", o + ["Arch.num_classes=12"], ["shape mismatch", "best_model.pdparams"]),
        ("eval-on-the-fly-predictor", "eval.py", o + [f"Global.pretrained_model={w}", "Arch.num_classes=12",
                                                      "Eval.use_predictor=true"], ["shape mismatch"]),
        ("eval-headless", "eval.py", o + [f"Global.pretrained_model={d['headless']}"], ["missing", d["headless"]]),
        ("export-12-classes", "export.py", o + [f"Global.pretrained_model={w}", "Arch.num_classes=12"],
         ["shape mismatch", w]),
        ("explain-12-classes", "explain.py", o + [f"Global.pretrained_model={w}", "Arch.num_classes=12",
                                                  "Explain.num_samples=8"], ["shape mismatch", w]),
        ("explain-headless", "explain.py", o + [f"Global.pretrained_model={d['headless']}",
                                                "Explain.num_samples=8"], ["missing"]),
    ]


CASE_IDS = [c[0] for c in _cases({"weights": "w", "out": "o", "headless": "h"})]


@pytest.fixture(scope="module")
def refused(trained):
    cases = _cases(trained)
    before = snapshot(trained["out"])
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = pool.map(lambda c: tool(c[1], trained["config"], c[2], cwd=trained["tmp"]), cases)
        results = dict(zip([c[0] for c in cases], results))
    return {"cases": {c[0]: c for c in cases}, "results": results, "before": before,
            "after": snapshot(trained["out"])}


@pytest.mark.parametrize("case", CASE_IDS)
def test_mismatched_weights_are_refused_outside_training(refused, case):
    err = one_error(refused["results"][case])
    for word in refused["cases"][case][3]:
        assert word in err, err


def test_refusals_write_nothing(refused):
    assert refused["after"] == refused["before"]  # no eval.json, inference/ or explain/ appeared


def test_fine_tuning_reinitialises_a_differing_head_and_says_so(trained):
    proc = ok(tool("train.py", trained["config"], [f"Global.output_dir={trained['out']}", "Global.run_name=ft12",
                                                   "Global.epochs=1", "Arch.num_classes=12",
                                                   f"Global.pretrained_model={trained['weights']}"]))
    assert "re-initialised" in proc.stdout
    # the same weights with the right head evaluate without complaint
    ok(tool("eval.py", trained["config"], [f"Global.output_dir={trained['out']}", "Global.run_name=strict_ok",
                                           f"Global.pretrained_model={trained['weights']}"]))


def test_create_model_keeps_the_fine_tuning_behaviour(trained):
    model = ppvit.create_model("convmixer_256_8", num_classes=12, dim=16, depth=2, pretrained=trained["weights"])
    assert model.get_classifier().weight.shape == [16, 12]


def test_pretrained_true_says_what_to_pass():
    with pytest.raises(ValueError) as info:
        ppvit.create_model("convmixer_256_8", pretrained=True, dim=16, depth=2)
    msg = str(info.value)
    assert ".pdparams" in msg and "convert_weights" in msg


def test_the_python_eval_api_is_strict_too(trained):
    from ppvit.commands.evaluate import evaluate
    from ppvit.io import CheckpointError

    with pytest.raises(CheckpointError, match="shape mismatch"):
        evaluate(trained["config"], [f"Global.output_dir={trained['out']}", "Arch.num_classes=12",
                                     f"Global.pretrained_model={trained['weights']}"])
    metrics = evaluate(trained["config"], [f"Global.output_dir={trained['out']}",
                                           f"Global.pretrained_model={trained['weights']}"])
    assert np.isfinite(metrics["loss"])
