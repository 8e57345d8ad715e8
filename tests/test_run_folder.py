"""Runs are never silently replaced: training into a folder that holds a run refuses (resume it,
choose Global.run_name, or say Global.overwrite=true); whatever is derived from weights (export, eval.json,
explain figures) records which weights it came from, and no tool serves an export older than its weights."""
import json
import os

import paddle
import pytest

from tests.runs import eval_logged_paths, ok, one_error, sha256, snapshot, tool, write_config


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A finished run with an export, an evaluation and an explanation beside it."""
    tmp = tmp_path_factory.mktemp("run_folder")
    config = write_config(tmp)
    out = str(tmp / "out")
    o = [f"Global.output_dir={out}"]
    ok(tool("train.py", config, o + ["Global.epochs=1"], cwd=tmp))
    run = os.path.join(out, "tiny")
    ok(tool("export.py", config, o + ["Export.onnx=false"], cwd=tmp))
    ok(tool("eval.py", config, o + ["Eval.grid_images=4"], cwd=tmp))
    ok(tool("explain.py", config, o + ["Explain.num_samples=8"], cwd=tmp))
    images = tmp / "images"
    images.mkdir()
    import cv2
    import numpy as np

    cv2.imwrite(str(images / "a.png"), np.full((16, 16, 3), 200, np.uint8))
    return {"tmp": tmp, "config": config, "out": out, "run": run, "o": o, "images": str(images)}


def test_derived_outputs_record_their_weights(first):
    run = first["run"]
    best = os.path.join(run, "best_model.pdparams")
    digest = sha256(best)
    with open(os.path.join(run, "eval.json"), encoding="utf-8") as f:
        ev = json.load(f)
    assert ev["source_weights"]["sha256"] == digest and os.path.samefile(ev["source_weights"]["path"], best)
    with open(os.path.join(run, "inference", "inference.meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    assert meta["source_weights"]["sha256"] == digest and os.path.samefile(meta["source_weights"]["path"], best)
    with open(os.path.join(run, "explain", "explain.json"), encoding="utf-8") as f:
        ex = json.load(f)
    assert ex["source_weights"]["sha256"] == digest
    assert all(os.path.isfile(os.path.join(run, "explain", p)) for p in ex["figures"])
    # the figures carry it too (PNG text): the prediction grid and the LIME figures
    from PIL import Image

    for png in [os.path.join(run, "predictions.png")] + [os.path.join(run, "explain", p) for p in ex["figures"]]:
        with Image.open(png) as im:
            assert digest in im.text.get("Source", ""), (png, im.text)


def _logged(proc):
    """The four paths an eval run with a grid logs (``eval_logged_paths``)."""
    found = eval_logged_paths(proc)
    assert len(found) == 4, proc.stdout[-3000:]
    return found


def test_evaluating_other_weights_keeps_the_first_evaluation(first, tmp_path):
    """After the default evaluation (best_model), evaluating final_model leaves eval.json and its figures as they
    were and writes its own where the log says, named after its weights; evaluating either again replaces only
    its own files; Eval.output chooses the folder (and is validated like every key)."""
    run, cfg, o, cwd = first["run"], first["config"], first["o"] + ["Eval.grid_images=4"], first["tmp"]
    best, final = os.path.join(run, "best_model.pdparams"), os.path.join(run, "final_model.pdparams")
    firsts = ("eval.json", "confusion_matrix.png", "reliability.png", "predictions.png")
    before = snapshot(run)
    assert all(f in before for f in firsts)

    proc = ok(tool("eval.py", cfg, o + [f"Global.pretrained_model={final}"], cwd=cwd))
    after = snapshot(run)
    assert {f: after[f] for f in firsts} == {f: before[f] for f in firsts}  # the first evaluation, untouched
    logged = {k: os.path.join(cwd, v) for k, v in _logged(proc).items()}
    written = sorted(os.path.relpath(p, run) for p in logged.values())
    assert written == ["confusion_matrix_final_model.png", "eval_final_model.json", "predictions_final_model.png",
                       "reliability_final_model.png"]
    assert sorted(set(after) - set(before)) == written  # nothing else appeared, nothing was removed
    with open(logged["metrics"], encoding="utf-8") as f:
        second = json.load(f)
    assert os.path.samefile(second["source_weights"]["path"], final) and second["count"] == 64
    with open(os.path.join(run, "eval.json"), encoding="utf-8") as f:
        assert os.path.samefile(json.load(f)["source_weights"]["path"], best)
    from PIL import Image

    with Image.open(logged["prediction grid"]) as im:
        assert final in im.text.get("Source", ""), im.text

    # the same weights again: the same files, replaced in place
    again = ok(tool("eval.py", cfg, o + [f"Global.pretrained_model={final}"], cwd=cwd))
    assert {k: os.path.join(cwd, v) for k, v in _logged(again).items()} == logged
    between = snapshot(run)
    assert set(between) == set(after)
    # ... without a grid this time: the earlier grid of those weights goes (it would describe another evaluation)
    ok(tool("eval.py", cfg, first["o"] + ["Eval.grid_images=0", f"Global.pretrained_model={final}"], cwd=cwd))
    assert not os.path.exists(logged["prediction grid"]) and set(snapshot(run)) == set(after) - {
        os.path.basename(logged["prediction grid"])}
    again = ok(tool("eval.py", cfg, o + [f"Global.pretrained_model={final}"], cwd=cwd))  # and back
    between = snapshot(run)
    assert set(between) == set(after)
    ok(tool("eval.py", cfg, o, cwd=cwd))  # and the default weights: eval.json again, the final_model files kept
    now = snapshot(run)
    assert set(now) == set(after) and {f: now[f] for f in written} == {f: between[f] for f in written}
    assert all(now[f][1] > between[f][1] for f in firsts)  # rewritten
    with open(os.path.join(run, "eval.json"), encoding="utf-8") as f:
        assert os.path.samefile(json.load(f)["source_weights"]["path"], best)

    # Eval.output: another folder, plain names there; the run folder untouched
    folder = str(tmp_path / "evals")
    proc = ok(tool("eval.py", cfg, o + [f"Global.pretrained_model={final}", f"Eval.output={folder}"], cwd=cwd))
    assert _logged(proc)["metrics"] == os.path.join(folder, "eval.json")
    assert sorted(os.listdir(folder)) == sorted(firsts) and snapshot(run) == now
    err = one_error(tool("eval.py", cfg, o + ["Eval.output=[a, b]"], cwd=cwd))
    assert "Eval.output" in err and "str" in err
    # a file where the folder should be: one line, said before the evaluation runs, nothing written
    (tmp_path / "a_file").write_text("x")
    proc = tool("eval.py", cfg, o + [f"Eval.output={tmp_path / 'a_file'}"], cwd=cwd)
    err = one_error(proc)
    assert err.startswith(f"error: Eval.output: {tmp_path / 'a_file'}: a file is in the way where a folder is "
                          "expected"), err
    assert "loss" not in proc.stdout and (tmp_path / "a_file").read_text() == "x" and snapshot(run) == now


def test_a_second_run_into_the_same_folder_is_refused(first):
    before = snapshot(first["out"])
    proc = tool("train.py", first["config"], first["o"] + ["Global.epochs=3"], cwd=first["tmp"])
    err = one_error(proc)
    assert first["run"] in err
    for way_out in ("Global.checkpoints", "Global.run_name", "Global.overwrite=true"):
        assert way_out in err, err
    assert snapshot(first["out"]) == before


def test_the_python_api_refuses_too(first):
    from ppvit.engine import ConfigError, Engine, load_config

    before = snapshot(first["out"])
    with pytest.raises(ConfigError, match="Global.overwrite"):
        Engine(load_config(first["config"], first["o"] + ["Global.epochs=1"])).train()
    assert snapshot(first["out"]) == before


def test_another_run_name_leaves_the_first_run_alone(first):
    before = snapshot(first["run"])
    ok(tool("train.py", first["config"], first["o"] + ["Global.epochs=1", "Global.run_name=second"], cwd=first["tmp"]))
    assert snapshot(first["run"]) == before
    assert os.path.isfile(os.path.join(first["out"], "second", "final_model.pdparams"))


def test_overwrite_replaces_the_run_and_stale_exports_are_refused(first, tmp_path):
    run, o = first["run"], first["o"]
    old_best = sha256(os.path.join(run, "best_model.pdparams"))
    proc = ok(tool("train.py", first["config"], o + ["Global.epochs=1", "Global.seed=11", "Global.overwrite=true"],
                   cwd=first["tmp"]))
    assert "overwrit" in proc.stdout.lower() or "replac" in proc.stdout.lower()
    new_best = os.path.join(run, "best_model.pdparams")
    assert sha256(new_best) != old_best
    with open(os.path.join(run, "train.log"), encoding="utf-8") as f:
        assert f.read().count("ppvit train:") == 1  # a new log, not the old one continued
    # the earlier run's derived outputs no longer sit beside the new weights as if they were theirs
    assert not os.path.exists(os.path.join(run, "eval.json"))
    assert not os.path.exists(os.path.join(run, "predictions.png"))
    assert not os.path.exists(os.path.join(run, "explain"))


def test_an_export_older_than_its_weights_is_not_served(first, tmp_path):
    """Export (to a folder of its own), then retrain (the weights file the export names changes): infer, eval
    and explain through the export refuse it, naming the export and the weights, until it is exported again."""
    cfg, o = first["config"], [f"Global.output_dir={tmp_path}"]
    exported = str(tmp_path / "exported")
    ok(tool("train.py", cfg, o + ["Global.epochs=1"], cwd=tmp_path))
    ok(tool("export.py", cfg, o + ["Export.onnx=false", f"Export.output={exported}"], cwd=tmp_path))
    served = [("infer.py", [f"Infer.model={exported}", f"Infer.images={first['images']}"]),
              ("eval.py", [f"Eval.model={exported}"]),
              ("explain.py", [f"Explain.model={exported}", "Explain.num_samples=8"])]
    for name, extra in served:
        ok(tool(name, cfg, o + extra, cwd=tmp_path))
    ok(tool("train.py", cfg, o + ["Global.epochs=1", "Global.seed=12", "Global.overwrite=true"], cwd=tmp_path))
    before = snapshot(tmp_path)
    for name, extra in served:
        err = one_error(tool(name, cfg, o + extra, cwd=tmp_path))
        assert "best_model.pdparams" in err and exported in err and "tools/export.py" in err, (name, err)
    assert snapshot(tmp_path) == before
    ok(tool("export.py", cfg, o + ["Export.onnx=false", f"Export.output={exported}"], cwd=tmp_path))
    ok(tool("infer.py", cfg, o + served[0][1], cwd=tmp_path))
    # a device this Paddle does not have is the user's to fix too: one line, not a traceback
    if not paddle.is_compiled_with_cuda():
        err = one_error(tool("infer.py", cfg, o + served[0][1] + ["Global.device=gpu"], cwd=tmp_path))
        assert "gpu" in err


def _eval_json(folder, name, **record):
    with open(os.path.join(folder, name), "w", encoding="utf-8") as f:
        json.dump(record, f)


def test_eval_outputs_names_the_files_of_other_weights(tmp_path):
    """Which names an evaluation gets in a folder: the plain ones when free or holding the same weights,
    else the weights' name, else that plus the sha256's first 8 hex digits; files of unknown origin
    (unreadable eval.json, figures without one) are never taken over."""
    from ppvit.commands.evaluate import eval_outputs
    from ppvit.engine import ConfigError

    out = str(tmp_path)
    a = {"path": str(tmp_path / "run" / "best_model.pdparams"), "sha256": "a" * 64}
    b = {"path": str(tmp_path / "run" / "final_model.pdparams"), "sha256": "b" * 64}
    b_elsewhere = {"path": str(tmp_path / "other" / "final_model.pdparams"), "sha256": "c" * 64}

    def name(source, model=None):
        paths = eval_outputs(out, source, model, "Paddle dygraph")
        return [os.path.basename(paths[k]) for k in ("metrics", "confusion_matrix", "grid")]

    assert name(a) == ["eval.json", "confusion_matrix.png", "predictions.png"]
    _eval_json(out, "eval.json", source_weights=a, model=None, forward="Paddle dygraph")
    assert name(a) == ["eval.json", "confusion_matrix.png", "predictions.png"]  # the same weights: replaced
    # a newer version of the same file is the same weights too (the earlier one no longer exists)
    assert name(dict(a, sha256="d" * 64))[0] == "eval.json"
    assert name(b) == ["eval_final_model.json", "confusion_matrix_final_model.png", "predictions_final_model.png"]
    _eval_json(out, "eval_final_model.json", source_weights=b, model=None)
    assert name(b)[0] == "eval_final_model.json"
    assert name(b_elsewhere)[0] == "eval_final_model_cccccccc.json"  # another file of the same name
    _eval_json(out, "eval_final_model_cccccccc.json", source_weights=b)
    with pytest.raises(ConfigError, match="Eval.output"):
        name(b_elsewhere)
    # an exported model of the same weights is evaluated beside them
    prefix = str(tmp_path / "run" / "inference" / "inference")
    assert name(a, prefix)[0] == "eval_inference.json"
    _eval_json(out, "eval_inference.json", source_weights=a, model=prefix, forward="ONNX Runtime fp32")
    assert name(a, prefix)[0] == "eval_inference.json"
    assert name(a, str(tmp_path / "exp" / "model"))[0] == "eval_exp_model.json"

    other = tmp_path / "o"
    other.mkdir()
    (other / "eval.json").write_text("{not json")
    assert eval_outputs(str(other), a, None, "x")["metrics"].endswith("eval_best_model.json")
    (other / "eval.json").unlink()
    (other / "predictions.png").write_bytes(b"")
    assert eval_outputs(str(other), a, None, "x")["metrics"].endswith("eval_best_model.json")
    assert not (other / "eval_best_model.json").exists()  # eval_outputs only names; nothing is written


def test_overwrite_removes_every_evaluation_and_nothing_else(tmp_path):
    from ppvit.engine.resume import clear_run_folder

    ours = ["eval.json", "eval_final_model.json", "confusion_matrix_final_model.png", "predictions_inference.png",
            "predictions.png", "infer_predictions.png", "train.log", "reliability.png", "reliability_final_model.png"]
    theirs = ["notes.txt", "my_eval.json", "predictions.jpg", "evaluation.json"]
    for f in ours + theirs:
        (tmp_path / f).write_text("x")
    assert sorted(clear_run_folder(str(tmp_path))) == sorted(ours)
    assert sorted(os.listdir(tmp_path)) == sorted(theirs)
