"""The run folder's file list is the writers' own declarations (engine/runfiles.py): whatever training and eval
write is declared, Global.overwrite removes exactly that, and a declaration follows its writer."""
import fnmatch
import os

from ppvit.commands.cli import main
from ppvit.engine import runfiles
from ppvit.engine.resume import clear_run_folder

from runs import write_config, TINY


def _declared(name, is_dir):
    decl = runfiles.declared()
    if is_dir:
        return decl.get(name, {}).get("kind") == "folder"
    return decl.get(name, {}).get("kind") == "file" or any(
        d["kind"] == "pattern" and fnmatch.fnmatchcase(name, n) for n, d in decl.items())


def test_every_file_training_and_eval_write_is_declared_and_overwrite_removes_them(tmp_path):
    config = write_config(tmp_path, dict(TINY, Global=dict(TINY["Global"], epochs=1, use_visualdl=True)))
    out = ["-o", f"Global.output_dir={tmp_path / 'out'}"]
    assert main(["train", "-c", config] + out) == 0
    run = tmp_path / "out" / "tiny"
    assert main(["eval", "-c", str(run), "-o", "Eval.grid_images=2"]) == 0
    assert main(["eval", "-c", str(run), "-o", f"Global.pretrained_model={run / 'final_model.pdparams'}",
                 "-o", "Eval.grid_images=2"]) == 0  # other weights: eval_final_model.json and its figures
    written = sorted(os.listdir(run))
    assert {"vdl", "eval.json", "eval_final_model.json", "history_steps.jsonl", "latest.pdstate"} <= set(written)
    undeclared = [n for n in written if not _declared(n, (run / n).is_dir())]
    assert not undeclared, undeclared
    (run / "notes.txt").write_text("mine")
    assert sorted(clear_run_folder(str(run))) == sorted(n + "/" if (n == "vdl") else n for n in written)
    assert os.listdir(run) == ["notes.txt"]


def test_the_verbs_declare_their_outputs_where_they_name_them():
    from ppvit.commands import evaluate, explain, export, infer

    decl = runfiles.declared()
    for name in (export.EXPORT_FOLDER, explain.EXPLAIN_FOLDER, infer.INFER_JSON, infer.INFER_GRID,
                 *evaluate.EVAL_FILES.values(), *evaluate.EVAL_PATTERNS):
        assert name in decl, name
    markers = {n for n, d in decl.items() if d["marker"]}
    assert markers == {"latest.pdstate", "best_model.pdparams", "final_model.pdparams"}
