"""What a new user reads: each verb's own ``-h`` (its description, the config keys it reads, an example), the
schema's suggestions for mistyped values, no config key that does nothing, and the console's per-step log lines
(``Global.print_interval``)."""
import os
import re
import subprocess
import sys

import pytest

from ppvit.commands.cli import main
from ppvit.commands.help import config_markdown
from ppvit.engine import ConfigError, load_config, train
from ppvit.engine.config import SCHEMA, dump
from tests.conftest import ROOT

QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")
# verb -> keys its -h must name, and keys of other verbs it must not
OWN_KEYS = {
    "train": (["Global.epochs", "Global.print_interval", "Global.save_interval", "Global.run_name",
               "Optimizer.name", "Loss.smoothing", "Data.batch_size"], ["Eval.model", "Infer.images"]),
    "eval": (["Eval.grid_images", "Eval.model", "Eval.use_predictor", "Global.pretrained_model"],
             ["Infer.images", "Optimizer.lr"]),
    "export": (["Export.output", "Export.onnx", "Global.pretrained_model"], ["Eval.model", "Optimizer.lr"]),
    "infer": (["Infer.model", "Infer.images", "Infer.topk"], ["Optimizer.lr", "Explain.indices"]),
    "explain": (["Explain.indices", "Explain.num_samples", "Explain.kernel_size", "Explain.method", "Global.seed"],
                ["Optimizer.lr", "Infer.images", "App.port"]),
    "app": (["App.port", "App.host", "App.model", "Global.pretrained_model"], ["Optimizer.lr", "Explain.indices"]),
}


def _help(verb, capsys):
    with pytest.raises(SystemExit) as info:
        main([verb, "-h"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_every_schema_key_has_a_one_line_meaning():
    from ppvit.engine.config import SECTION_DOCS

    undocumented = [f"{section}.{key}" for section, keys in SCHEMA.items() for key, spec in keys.items()
                    if not spec.doc or "\n" in spec.doc]
    assert not undocumented, f"schema keys without a one-line doc=: {undocumented}"
    assert set(SECTION_DOCS) == set(SCHEMA)
    from ppvit.data.transforms import PIPELINES

    assert all(name in SCHEMA["Data"]["transform"].doc for name in PIPELINES)


def test_the_config_reference_is_generated_from_the_schema():
    """docs/config.md is what the schema generates: a key added, removed or re-documented without
    regenerating the page fails here."""
    path = os.path.join(ROOT, "docs", "config.md")
    with open(path, encoding="utf-8") as f:
        assert f.read() == config_markdown(), \
            "docs/config.md is stale: run  python -m ppvit.commands.help --markdown > docs/config.md"
    text = config_markdown()
    for section, keys in SCHEMA.items():
        for key, spec in keys.items():
            assert f"| `{section}.{key}` | {spec.type_names()} |" in text and spec.doc.split(" (")[0] in text


def test_each_verb_help_is_its_own(capsys):
    texts = {verb: _help(verb, capsys) for verb in list(OWN_KEYS) + ["convert"]}
    assert len(set(texts.values())) == len(texts)  # no two verbs print the same text
    for verb, (named, foreign) in OWN_KEYS.items():
        text = texts[verb]
        assert f"usage: ppvit {verb} " in text, text
        for key in named:
            assert re.search(rf"^  {re.escape(key)} \(", text, re.M), (verb, key)
        for key in foreign:
            assert key not in text, (verb, key)
        example = text.split("example:\n", 1)[1].strip()
        assert example.startswith(f"ppvit {verb} -c configs/"), example
        assert "PPVIT_DEBUG" in text  # the environment switch a user of that verb may need
    # a key line says its type, default, choices and meaning
    assert "Optimizer.name (str, default Adam, one of Adam|AdamW|SGD): " in texts["train"]
    assert "Global.print_interval (int, default 10): a log line" in texts["train"]
    assert "example:\n  ppvit convert --model convit_tiny" in texts["convert"]


def test_tool_script_help_is_the_verb_help():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "eval.py"), "-h"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: ppvit eval ") and "Eval.grid_images (int, default 18)" in proc.stdout
    assert "ppvit eval -c configs/quickstart.yaml" in proc.stdout


@pytest.mark.parametrize("override, suggestion", [
    ("Optimizer.name=sgd", "did you mean SGD?"),
    ("Optimizer.name=adamw", "did you mean AdamW?"),
    ("Loss.name=crossentropy", "did you mean CrossEntropy?"),
    ("Loss.name=labelsmoothing_crossentropy", "did you mean LabelSmoothingCrossEntropy?"),
    ("Optimizer.scheduler=Cosine", "did you mean cosine?"),
    ("Global.device=GPU", "did you mean gpu?"),
    ("Data.dataset=Folder", "did you mean folder?"),
    ("Global.Epochs=3", "did you mean epochs?"),
])
def test_suggestions_ignore_case(override, suggestion):
    with pytest.raises(ConfigError, match=re.escape(suggestion)):
        load_config(QUICKSTART, [override])


def test_smoothing_only_where_the_loss_uses_it(tmp_path):
    cfg = load_config(QUICKSTART)  # plain CrossEntropy: no smoothing key, in memory or in the saved config
    assert cfg["Loss"] == {"name": "CrossEntropy"} and "smoothing" not in dump(cfg)
    with pytest.raises(ConfigError, match="Loss.smoothing=0.1 has no effect with Loss.name=CrossEntropy.*"
                                          "LabelSmoothingCrossEntropy"):
        load_config(QUICKSTART, ["Loss.smoothing=0.1"])
    assert load_config(QUICKSTART, ["Loss.smoothing=0"])["Loss"] == {"name": "CrossEntropy"}  # nothing to refuse
    ls = load_config(QUICKSTART, ["Loss.name=LabelSmoothingCrossEntropy"])
    assert ls["Loss"]["smoothing"] == 0.1 and "smoothing: 0.1" in dump(ls)
    assert load_config(QUICKSTART, ["Loss.name=LabelSmoothingCrossEntropy", "Loss.smoothing=0.3"])["Loss"][
        "smoothing"] == 0.3
    # a saved config loads again unchanged (it is what `-c <run>/config.yaml` reads)
    saved = tmp_path / "config.yaml"
    saved.write_text(dump(cfg))
    assert load_config(saved)["Loss"] == cfg["Loss"]


def test_image_size_error_tells_a_cli_user_the_override():
    import paddle

    import ppvit

    model = ppvit.create_model("convit_tiny", num_classes=3, img_size=32, depth=1)
    with pytest.raises(ValueError) as info:
        model(paddle.zeros([1, 3, 48, 48]))
    assert "-o Arch.img_size=" in str(info.value) and "img_size=" in str(info.value)


@pytest.mark.parametrize("interval, steps", [(3, [3, 6, 8]), (100, [8])])
def test_print_interval_sets_the_console_step_lines(tmp_path, capfd, interval, steps):
    """A line every Global.print_interval steps (and the epoch's last) on the console and in train.log,
    as PaddleClas prints one every print_batch_step."""
    train(QUICKSTART, [f"Global.output_dir={tmp_path}", "Global.epochs=1", "Data.limit=128", "Data.batch_size=16",
                       f"Global.print_interval={interval}", "Data.eval_batch_size=64"])
    out = capfd.readouterr().out
    pattern = r"epoch 1/1 step (\d+)/8 lr \S+ loss \d+\.\d+ ips [\d.]+ img/s eta \d\d:\d\d"
    assert [int(s) for s in re.findall(pattern, out)] == steps, out
    log = (tmp_path / "quickstart" / "train.log").read_text()
    assert [int(s) for s in re.findall(pattern, log)] == steps
    assert "epoch 1/1 | train loss" in out
