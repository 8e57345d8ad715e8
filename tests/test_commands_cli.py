"""The ``ppvit`` command (``python -m ppvit`` and the installed console script): its verbs, one-line user
errors with exit code 2, a train -> eval round whose metrics agree, and the start-up it shares with tools/*.py
(OMP_NUM_THREADS before Paddle, Paddle's import notices filtered) while ``import ppvit`` stays side-effect free."""
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")
VERBS = ("train", "eval", "export", "infer", "explain", "app", "convert")


def _ppvit(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "ppvit", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd or ROOT, env=dict(env or os.environ, PYTHONPATH=ROOT, PPVIT_OFFLINE="1"))


def _one_line_error(proc, *words):
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for w in words:
        assert w in lines[0], lines[0]


def test_help_lists_every_verb_and_each_takes_its_arguments():
    top = _ppvit("-h")
    assert top.returncode == 0 and all(v in top.stdout for v in VERBS), top.stdout
    for verb in ("train", "eval", "export", "infer", "explain", "app"):
        sub = _ppvit(verb, "-h")
        assert sub.returncode == 0 and "-c CONFIG" in sub.stdout and "-o Section.key=value" in sub.stdout, sub.stdout
    sub = _ppvit("convert", "-h")
    assert sub.returncode == 0 and all(a in sub.stdout for a in ("--model", "--src", "--dst")), sub.stdout


def test_usage_errors_exit_2():
    for args, words in [((), "required"), (("fit", "-c", QUICKSTART), "invalid choice: 'fit'"),
                        (("train",), "-c/--config")]:
        proc = _ppvit(*args)
        assert proc.returncode == 2 and "usage: python -m ppvit" in proc.stderr and words in proc.stderr, proc.stderr


def test_user_errors_are_one_line_exit_2(tmp_path):
    _one_line_error(_ppvit("train", "-c", QUICKSTART, "-o", "Global.epoch=3"),
                    "unknown key Global.epoch", "did you mean epochs")
    _one_line_error(_ppvit("eval", "-c", str(tmp_path / "nope.yaml")), "config file not found")
    _one_line_error(_ppvit("infer", "-c", QUICKSTART, "-o", f"Global.output_dir={tmp_path}"), "Infer.images")
    _one_line_error(_ppvit("convert", "--model", "convit_tiy", "--src", str(tmp_path / "x.pth"),
                           "--dst", str(tmp_path / "x.pdparams")), "convit_tiny")
    assert os.listdir(tmp_path) == []


def test_train_then_eval_reproduces_the_logged_validation(tmp_path):
    common = ["-c", QUICKSTART, "-o", f"Global.output_dir={tmp_path}", "-o", "Data.limit=48",
              "-o", "Global.epochs=1", "-o", f"Data.data_file={tmp_path / 'digits.tar.gz'}"]
    train = _ppvit("train", *common, cwd=str(tmp_path))
    assert train.returncode == 0, train.stdout + train.stderr
    run = tmp_path / "quickstart"
    history = json.loads((run / "history.json").read_text())
    ev = _ppvit("eval", *common, cwd=str(tmp_path))  # the run's best_model.pdparams by default
    assert ev.returncode == 0, ev.stdout + ev.stderr
    result = json.loads((run / "eval.json").read_text())
    assert result["top1"] == pytest.approx(history["epochs"]["val_top1"][-1], abs=1e-9)
    assert result["weights"].endswith("best_model.pdparams") and result["count"] == 48
    assert (run / "confusion_matrix.png").stat().st_size > 0 and (run / "predictions.png").stat().st_size > 0
    # train.log gives the parameter count of the model zoo table (ppvit.models.profile: no BatchNorm statistics)
    from ppvit.models.profile import count_params
    import ppvit

    n = count_params(ppvit.create_model("convmixer_256_8", **_arch(run)))
    assert f"({n / 1e3:.1f}K params)" in (run / "train.log").read_text()


def _arch(run):
    import yaml

    arch = dict(yaml.safe_load((run / "config.yaml").read_text())["Arch"])
    arch.pop("name")
    return arch


def test_startup_sets_threads_and_filters_paddle_notices_but_import_ppvit_does_not():
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    code = ("import os, sys; import ppvit; assert 'paddle' not in sys.modules; assert 'OMP_NUM_THREADS' not in "
            "os.environ; import ppvit.commands.cli; print(os.environ['OMP_NUM_THREADS'], 'paddle' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=dict(env, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr
    threads, imported = proc.stdout.split()
    assert int(threads) == len(os.sched_getaffinity(0)) and imported == "True"
    assert "No ccache found" not in proc.stderr and "OMP_NUM_THREADS set to" not in proc.stderr, proc.stderr
    code = "import os, ppvit.commands.cli; print(os.environ['OMP_NUM_THREADS'])"
    kept = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=dict(env, PYTHONPATH=ROOT, OMP_NUM_THREADS="1"))
    assert kept.stdout.strip() == "1", kept.stderr  # a value the user set is kept


def test_console_script_when_installed():
    script = os.path.join(os.path.dirname(sys.executable), "ppvit")
    if not os.path.isfile(script):
        pytest.skip("ppvit is not installed in this environment (pip install -e . adds the command; .ci/run does)")
    proc = subprocess.run([script, "-h"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and all(v in proc.stdout for v in VERBS), proc.stdout
    proc = subprocess.run([script, "train", "-c", QUICKSTART, "-o", "Global.epoch=3"], capture_output=True,
                          text=True, timeout=300)
    _one_line_error(proc, "unknown key Global.epoch")
