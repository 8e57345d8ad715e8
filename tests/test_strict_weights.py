"""Weights are loaded strictly wherever no training follows: eval, export and explain refuse weights
whose head (or any key) does not fit, with one error naming the mismatch and nothing written; only training
from ``Global.pretrained_model`` re-initialises a differing head, and says so."""
import logging
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import paddle
import pytest

import ppvit
from ppvit.io import CheckpointError
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
    # another registered model's weights (a user pointing at the wrong run)
    other = os.path.join(tmp, "conv2former.pdparams")
    ppvit.io.save_state(ppvit.create_model("conv2former_n_cifar").state_dict(), other)
    # the same weights plus a key that is no model tensor at all (a counter some training scripts save)
    counter = os.path.join(tmp, "with_counter.pdparams")
    ppvit.io.save_state({**ppvit.io.load_state(weights), "ema.n_updates": np.array(7, "int64")}, counter)
    # weights for 12 classes (the config's data has 10, and Arch.num_classes must say 10): as a file, with the
    # counter, and as the best model of a run folder
    w12 = os.path.join(tmp, "w12.pdparams")
    ppvit.io.save_state(ppvit.create_model("convmixer_256_8", num_classes=12, dim=16, depth=2).state_dict(), w12)
    counter12 = os.path.join(tmp, "w12_with_counter.pdparams")
    ppvit.io.save_state({**ppvit.io.load_state(w12), "ema.n_updates": np.array(7, "int64")}, counter12)
    os.makedirs(os.path.join(out, "tiny12"))
    ppvit.io.save_state(ppvit.io.load_state(w12), os.path.join(out, "tiny12", "best_model.pdparams"))
    return {"tmp": tmp, "config": config, "out": out, "run": run, "weights": weights, "headless": headless,
            "other": other, "counter": counter, "w12": w12, "counter12": counter12}


def _cases(d):
    w12, o = d["w12"], [f"Global.output_dir={d['out']}"]
    return [
        # (id, tool, overrides, words the error must contain)
        ("eval-12-classes", "eval.py", o + [f"Global.pretrained_model={w12}"], ["num_classes", "shape mismatch", w12]),
        ("eval-best-model-default", "eval.py", o + ["Global.run_name=tiny12"], ["shape mismatch", "best_model.pdparams"]),
        ("eval-on-the-fly-predictor", "eval.py", o + [f"Global.pretrained_model={w12}", "Eval.use_predictor=true"],
         ["shape mismatch"]),
        # the head differs and the file holds a counter besides: still a class-count problem, not another model
        ("eval-12-classes-with-counter", "eval.py", o + [f"Global.pretrained_model={d['counter12']}"],
         ["shape mismatch", "class count, 12, and remove ema.n_updates from the file",
          "1 key the model does not have: ema.n_updates"]),
        ("eval-headless", "eval.py", o + [f"Global.pretrained_model={d['headless']}"], ["missing", d["headless"]]),
        ("export-12-classes", "export.py", o + [f"Global.pretrained_model={w12}"], ["shape mismatch", w12]),
        ("explain-12-classes", "explain.py", o + [f"Global.pretrained_model={w12}", "Explain.num_samples=8"],
         ["shape mismatch", w12]),
        ("explain-headless", "explain.py", o + [f"Global.pretrained_model={d['headless']}",
                                                "Explain.num_samples=8"], ["missing"]),
        # another model's weights: counts and a few keys, not the class-count advice (see OTHER_MODEL below)
        ("eval-another-model", "eval.py", o + [f"Global.pretrained_model={d['other']}"], [d["other"]]),
        ("export-another-model", "export.py", o + [f"Global.pretrained_model={d['other']}"], [d["other"]]),
        ("explain-another-model", "explain.py", o + [f"Global.pretrained_model={d['other']}",
                                                     "Explain.num_samples=8"], [d["other"]]),
        # the same backbone at another depth: other keys differ than the head, so no class-count advice either
        ("eval-another-depth", "eval.py", o + [f"Global.pretrained_model={d['weights']}", "Arch.depth=1"],
         # weights from a run folder: the run folder as the config is the fix (it has the settings they trained with)
         ["does not hold convmixer_256_8 weights for this config: 2 of 20 model keys missing, 14 unexpected "
          "(e.g. missing 6.weight, 6.bias; unexpected 4.0.fn.0.weight); these weights come from the run ",
          "give the run folder as the config (-c "]),
    ]


CASE_IDS = [c[0] for c in _cases({"weights": "w", "w12": "v", "out": "o", "headless": "h", "other": "c", "counter12": "n"})]
HEAD_ONLY = [c for c in CASE_IDS if "12-classes" in c or "headless" in c or "default" in c or "predictor" in c]
OTHER_MODEL = [c for c in CASE_IDS if c.endswith("another-model")]


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


@pytest.mark.parametrize("case", HEAD_ONLY)
def test_a_head_for_another_class_count_says_to_set_num_classes(refused, case):
    err = one_error(refused["results"][case])
    assert "Arch.num_classes" in err and "class count" in err, err
    assert "model convmixer_256_8" in err and "ConvMixer" not in err, err  # the registered name, not the class


@pytest.mark.parametrize("case", OTHER_MODEL)
def test_another_models_weights_get_a_short_line_without_class_count_advice(refused, trained, case):
    """Weights of another model are not a class-count problem: one short line with the counts, a few example
    keys and what to check, instead of ~2000 characters of key names ending with num_classes advice."""
    err = one_error(refused["results"][case])
    other = trained["other"]
    assert f"{other} does not hold convmixer_256_8 weights for this config: " in err, err
    assert "32 of 32 model keys missing, 267 unexpected" in err, err  # none of the 32 (dim 16, depth 2) is there
    assert "unexpected (e.g. missing 0.weight, 0.bias; unexpected " in err, err
    assert err.endswith("check Arch.name and the Arch.* sizes, or the weights file"), err
    assert "num_classes" not in err and "ConvMixer" not in err, err
    assert len(err) - len(other) < 300, (len(err), err)


@pytest.mark.parametrize("case", [c for c in CASE_IDS if c not in HEAD_ONLY])
def test_no_class_count_advice_when_more_than_the_head_differs(refused, case):
    err = one_error(refused["results"][case])
    assert "num_classes" not in err and "class count" not in err and "ConvMixer" not in err, err


def test_refusals_write_nothing(refused):
    assert refused["after"] == refused["before"]  # no eval.json, inference/ or explain/ appeared


def test_fine_tuning_reinitialises_a_differing_head_and_says_so(trained):
    proc = ok(tool("train.py", trained["config"], [f"Global.output_dir={trained['out']}", "Global.run_name=ft12",
                                                   "Global.epochs=1", f"Global.pretrained_model={trained['w12']}"]))
    assert "re-initialised" in proc.stdout
    # the same weights with the right head evaluate without complaint
    ok(tool("eval.py", trained["config"], [f"Global.output_dir={trained['out']}", "Global.run_name=strict_ok",
                                           f"Global.pretrained_model={trained['weights']}"]))


def test_create_model_keeps_the_fine_tuning_behaviour(trained):
    model = ppvit.create_model("convmixer_256_8", num_classes=12, dim=16, depth=2, pretrained=trained["weights"])
    assert model.get_classifier().weight.shape == [16, 12]


def test_create_model_without_classifier_leaves_the_checkpoints_head_out(tmp_path, caplog):
    """num_classes=0 (a feature extractor) from a checkpoint with a 10-class head: the backbone loads and the
    head is left out (logged), as any other class count re-initialises it; where no training follows
    (reset_head=False) the refusal gives the class-count advice, not "another model"."""
    from ppvit.models.helpers import load_pretrained

    src = ppvit.create_model("convmixer_256_8", num_classes=10, dim=16, depth=2)
    path = str(tmp_path / "w10.pdparams")
    ppvit.io.save_state(src.state_dict(), path)
    with caplog.at_level(logging.INFO, logger="ppvit"):
        model = ppvit.create_model("convmixer_256_8", num_classes=0, dim=16, depth=2, pretrained=path)
    assert "classifier 7.weight, 7.bias left out (the model has none)" in caplog.text, caplog.text
    assert model.state_dict().keys() == src.state_dict().keys() - {"7.weight", "7.bias"}
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), src.state_dict()[k].numpy())
    assert model(paddle.randn([2, 3, 8, 8])).shape == [2, 16]

    with pytest.raises(CheckpointError) as err:
        load_pretrained(ppvit.create_model("convmixer_256_8", num_classes=0, dim=16, depth=2), path,
                        reset_head=False, context=" for this config", fix="check Arch.name")
    msg = str(err.value)
    assert msg.startswith(f"{path} does not match model convmixer_256_8: unexpected keys: 7.weight, 7.bias; "), msg
    assert msg.endswith("set Arch.num_classes (num_classes) to the weights' class count, 10"), msg
    assert "does not hold" not in msg and "check Arch.name" not in msg, msg

    # only a model WITHOUT a classifier leaves the file's out: one that has a head refuses an unknown key under
    # its prefix (another head layout), even when fine-tuning (reset_head=True), rather than dropping it
    state = dict(src.state_dict(), **{"7.fc.weight": np.zeros([16, 10], "float32")})
    with pytest.raises(CheckpointError, match="7.fc.weight"):
        load_pretrained(ppvit.create_model("convmixer_256_8", num_classes=10, dim=16, depth=2), state)


def test_a_key_that_is_no_model_tensor_is_named_not_blamed_on_the_model(tmp_path):
    """Every model weight fits but the file holds a counter besides: a strict load refuses it, saying just
    that (not "does not hold convmixer_256_8 weights ... check the model name")."""
    model = ppvit.create_model("convmixer_256_8", num_classes=10, dim=16, depth=2)
    path = str(tmp_path / "w.pdparams")
    ppvit.io.save_state({**model.state_dict(), "ema.n_updates": paddle.to_tensor(7)}, path)
    for num_classes in (10, 3):  # create_model re-initialises another head; the counter is still named
        with pytest.raises(CheckpointError) as err:
            ppvit.create_model("convmixer_256_8", num_classes=num_classes, dim=16, depth=2, pretrained=path)
        assert str(err.value) == (f"{path} holds the convmixer_256_8 weights for these arguments and 1 key the "
                                  "model does not have: ema.n_updates; remove it from the file")
    # a key of the model's kind (a weight) that the model lacks is another model or size, as before
    ppvit.io.save_state({**model.state_dict(), "8.weight": paddle.zeros([2, 2])}, path)
    with pytest.raises(CheckpointError, match="does not hold convmixer_256_8 weights for these arguments: 1 "
                                              "unexpected key \\(unexpected 8.weight\\); check the model"):
        ppvit.create_model("convmixer_256_8", num_classes=10, dim=16, depth=2, pretrained=path)


def test_pretrained_true_says_what_to_pass():
    with pytest.raises(ValueError) as info:
        ppvit.create_model("convmixer_256_8", pretrained=True, dim=16, depth=2)
    msg = str(info.value)
    assert ".pdparams" in msg and "convert_weights" in msg


def test_the_python_eval_api_is_strict_too(trained):
    from ppvit.commands.evaluate import evaluate
    from ppvit.io import CheckpointError

    with pytest.raises(CheckpointError, match="shape mismatch"):
        evaluate(trained["config"], [f"Global.output_dir={trained['out']}",
                                     f"Global.pretrained_model={trained['w12']}"])
    metrics = evaluate(trained["config"], [f"Global.output_dir={trained['out']}",
                                           f"Global.pretrained_model={trained['weights']}"])
    assert np.isfinite(metrics["loss"])
