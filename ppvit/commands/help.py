"""What ``ppvit <verb> -h`` (and ``python tools/<verb>.py -h``) prints, and the config reference
docs/config.md: both generated from the schema (``ppvit.engine.config.SCHEMA``: each key's type, default,
accepted values and one-line ``doc``; ``SECTION_DOCS``), plus each verb's description and example below.

Regenerate the reference after changing the schema::

    python -m ppvit.commands.help --markdown > docs/config.md
"""
import sys
import textwrap

import yaml

__all__ = ["VERB_HELP", "ENVIRONMENT", "describe_keys", "verb_description", "verb_epilog", "config_markdown"]

ENVIRONMENT = [
    ("PPVIT_DEBUG=1", "show the traceback of a user error instead of the one-line message"),
    ("OMP_NUM_THREADS", "CPU threads; unset, the tools use every usable core"),
]

# verb -> (description, [(section, keys or None for all)], example)
_RUN = [("Global", ["device", "output_dir", "run_name", "pretrained_model"]), ("Arch", None)]
VERB_HELP = {
    "train": ("Train a model from a YAML config (PaddleClas's -c/-o). Writes best_model, final_model, latest.* "
              "(resumable), train.log, history.json and learning curves to Global.output_dir/<run name>/.",
              [("Global", None), ("Arch", None), ("Loss", None), ("Optimizer", None), ("Data", None)],
              "ppvit train -c configs/quickstart.yaml -o Global.epochs=3 -o Data.batch_size=32"),
    "eval": ("Evaluate weights on the test split: loss, top-1/top-5, per-class accuracy/precision/recall/F1, "
             "expected calibration error (Eval.calibrate: fit temperature scaling); writes eval.json, "
             "confusion_matrix.png, reliability.png and predictions.png to the run folder (Eval.output), or "
             "eval_<weights>.json, ... beside them when they hold an evaluation of other weights.",
             _RUN + [("Data", ["dataset", "data_file", "val_dir", "val_list", "transform", "eval_batch_size",
                               "limit"]), ("Eval", None)],
             "ppvit eval -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/best_model.pdparams"),
    "export": ("Export weights for Paddle Inference (+ ONNX), with their preprocessing and class names in "
               "<prefix>.meta.json, and check the exported model against the dygraph one.",
               _RUN + [("Data", ["dataset", "data_file", "val_dir", "val_list", "transform"]), ("Export", None)],
               "ppvit export -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/best_model.pdparams"),
    "infer": ("Classify image files or folders with an exported model: top-k per image printed, infer.json and "
              "infer_predictions.png written. Scores are softmax(logits / T) when the export records a temperature "
              "(ppvit eval -o Eval.calibrate=true, then export), with the raw ones beside them.",
              [("Global", ["device", "output_dir", "run_name"]), ("Infer", None)],
              "ppvit infer -c configs/quickstart.yaml -o Infer.images=my_images -o Infer.topk=3"),
    "explain": ("LIME and/or Grad-CAM explanations (Explain.method) of test images or image files, through the "
                "dygraph model or an exported model, with their faithfulness (deletion/insertion AUCs) in "
                "explain.json.",
                [("Global", ["device", "seed", "output_dir", "run_name", "pretrained_model"]), ("Arch", None),
                 ("Data", ["dataset", "data_file", "transform"]), ("Explain", None)],
                "ppvit explain -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/best_model.pdparams "
                "-o 'Explain.indices=[0,3]'"),
    "app": ("A local web app (Gradio, offline) over the run's exported model: upload or pick images, see the top-k "
            "classes, and LIME and Grad-CAM explanations with their faithfulness. Needs pip install '.[app]'.",
            [("Global", ["device", "seed", "output_dir", "run_name", "pretrained_model"]), ("Arch", None),
             ("Data", ["dataset", "data_file", "transform"]), ("App", None)],
            "ppvit app -c configs/quickstart.yaml -o App.port=7860"),
}


def _default(spec, quote=""):
    """A key's default as YAML (``quote`` around it), or None when the key is required."""
    from ..engine.config import REQUIRED

    if spec.default is REQUIRED:
        return None
    return quote + yaml.safe_dump(spec.default, default_flow_style=True).strip().removesuffix("\n...") + quote


def describe_keys(section, keys=None, width=100):
    """One entry per key of ``section`` (all when ``keys`` is None): name, type, default, choices, meaning."""
    from ..engine.config import SCHEMA

    lines = []
    for key, spec in SCHEMA[section].items():
        if keys is not None and key not in keys:
            continue
        name = f"{section}.{key}"
        default = _default(spec)
        facts = [spec.type_names(), "required" if default is None else "default " + default]
        if spec.choices:
            facts.append("one of " + "|".join(spec.choices))
        text = f"{name} ({', '.join(facts)}): {spec.doc}"
        lines.append(textwrap.fill(text, width, initial_indent="  ", subsequent_indent="      "))
    if section == "Arch" and keys is None:
        lines.append("  Arch.<other>: passed to the model builder (e.g. drop_path_rate, in_chans)")
    return lines


CONVERT_EXAMPLE = ("ppvit convert --model convit_tiny --src convit_tiny.pth "
                   "--dst pretrained/convit_tiny.safetensors")


def verb_description(verb, width=100):
    return textwrap.fill(VERB_HELP[verb][0], width)


def verb_epilog(verb):
    """The text after the usage of ``ppvit <verb> -h``: keys read, environment, example."""
    if verb == "convert":
        return "example:\n  " + CONVERT_EXAMPLE
    _, sections, example = VERB_HELP[verb]
    lines = ["config keys it reads (set in the YAML or with -o Section.key=value):"]
    for section, keys in sections:
        lines += describe_keys(section, keys)
    lines += ["", "environment:"] + [f"  {name}: {text}" for name, text in ENVIRONMENT]
    lines += ["", "example:", f"  {example}"]
    return "\n".join(lines)


def _cell(text):
    return str(text).replace("|", "\\|")


def config_markdown():
    """docs/config.md: every section and key of the schema (type, default, accepted values, meaning), the
    environment variables, and which keys each verb reads."""
    from ..engine.config import SCHEMA, SECTION_DOCS

    out = ["# Config reference", "",
           "<!-- generated from ppvit/engine/config.py by `python -m ppvit.commands.help --markdown`: "
           "edit the schema, not this file -->", "",
           "A config is a YAML file of sections (`-c configs/quickstart.yaml`); any key can be overridden on the "
           "command line, PaddleClas-style, with `-o Section.key=value` (repeatable; values are typed YAML). "
           "A key that does not exist, a value of the wrong type or outside the accepted values stops with one "
           "message naming the key and what is accepted (exit code 2). Each tool's `-h` (`ppvit train -h`, "
           "`python tools/eval.py -h`) lists the keys that tool reads.", "",
           "After changing the schema (`SCHEMA` in `ppvit/engine/config.py`: one line per key, with its `doc`), "
           "regenerate this page:", "",
           "```bash", "python -m ppvit.commands.help --markdown > docs/config.md", "```", ""]
    for section, keys in SCHEMA.items():
        out += [f"## {section}", "", SECTION_DOCS[section][0].upper() + SECTION_DOCS[section][1:] + ".", "",
                "| key | type | default | accepted | meaning |", "| --- | --- | --- | --- | --- |"]
        for key, spec in keys.items():
            default = _default(spec, "`") or "required"
            accepted = " | ".join(f"`{c}`" for c in spec.choices) if spec.choices else \
                (spec.check[1] if spec.check else "")
            out.append(f"| `{section}.{key}` | {spec.type_names()} | {default} | {_cell(accepted)} | "
                       f"{_cell(spec.doc)} |")
        out.append("")
    out += ["## Which keys each tool reads", "", "| tool | sections (keys) |", "| --- | --- |"]
    for verb, (_, sections, _) in VERB_HELP.items():
        parts = [f"{sec}" if keys is None else f"{sec} ({', '.join(keys)})" for sec, keys in sections]
        out.append(f"| `ppvit {verb}` | {'; '.join(parts)} |")
    out += ["", "## Environment", "", "| variable | effect |", "| --- | --- |"]
    out += [f"| `{name}` | {text} |" for name, text in ENVIRONMENT]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m ppvit.commands.help --markdown > docs/config.md")
    from ..utils.quiet import quiet_paddle_import

    quiet_paddle_import(set_threads=False)  # the schema's model checks import Paddle: without its notices
    sys.stdout.write(config_markdown())
