"""The ``ppvit`` command: ``ppvit train|eval|export|infer|explain|app -c CONFIG [-o Section.key=value ...]``
(PaddleClas's ``-c``/``-o``) and ``ppvit convert --model NAME --src FILE --dst FILE``. ``tools/*.py`` and
``python -m ppvit`` run the same ``main``.

The error contract (ppvit/errors.py): a ``PpvitError`` (config, data, checkpoint, image file: the user's to fix)
or a missing/unwritable path prints one ``error:`` line to stderr and exits 2 (``PPVIT_DEBUG=1`` shows the
traceback); a run stopped by a non-finite loss or weights exits 1 and Ctrl-C 130, each with one line saying what
was kept. Anything else is a bug and keeps its traceback.
"""
from . import _bootstrap  # noqa: F401,I001  (OMP_NUM_THREADS and a quiet Paddle import, before anything else)

import argparse
import os
import sys

VERBS = {
    "train": "train a model from a YAML config",
    "eval": "evaluate weights on the test split: loss, top-1/top-5, per-class accuracy, confusion matrix",
    "export": "export weights for Paddle Inference (+ ONNX) with their preprocessing and labels",
    "infer": "classify image files or folders with an exported model",
    "explain": "LIME and Grad-CAM explanations of test images or image files",
    "app": "a local web app (Gradio) over the run's exported model: top-k, LIME and Grad-CAM",
    "convert": "convert an official PyTorch checkpoint (.pth / .safetensors) to ppvit weights",
}


def _add_config_arguments(parser):
    parser.add_argument("-c", "--config", required=True, help="YAML config, e.g. configs/quickstart.yaml")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="Section.key=value",
                        help="override a config key (repeatable), e.g. -o Global.epochs=5 -o Data.limit=64")
    return parser


def build_parser(prog="ppvit"):
    from .convert import add_arguments as add_convert_arguments

    parser = argparse.ArgumentParser(prog=prog, description="ppvit: train, evaluate, export, run, explain and "
                                                            "convert Conv2Former, ConViT, CoAtNet, ConvMixer "
                                                            "and DilateFormer models")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{" + ",".join(VERBS) + "}")
    for verb, text in VERBS.items():
        sub = verbs.add_parser(verb, help=text, **_verb_help(verb, text))
        if verb == "convert":
            add_convert_arguments(sub)
        else:
            _add_config_arguments(sub)
    return parser


def _verb_help(verb, text):
    """``-h`` of one verb: its own description, the config keys it reads and an example (commands/help.py)."""
    from .help import VERB_HELP, verb_description, verb_epilog

    return {"description": verb_description(verb) if verb in VERB_HELP else text, "epilog": verb_epilog(verb),
            "formatter_class": argparse.RawDescriptionHelpFormatter}


def main(argv=None, prog="ppvit"):
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the verb; returns the exit code. argparse errors
    exit 2 with its usage line."""
    args = build_parser(prog).parse_args(argv)
    return run(args.verb, args)


def tool_main(verb, argv=None):
    """``tools/<verb>.py``: ``main`` with the verb fixed (``python tools/train.py -c ...``)."""
    return main([verb] + list(sys.argv[1:] if argv is None else argv))  # usage: "ppvit <verb> ..."


def run(verb, args):
    """Run ``verb`` with parsed ``args``; user errors become one stderr line and exit code 2."""
    from ..engine.distributed import rank
    from ..engine.logger import setup_logging
    from ..engine.trainer import NonFiniteLossError
    from ..errors import PpvitError
    from ..utils.interrupt import CtrlCWatch

    from ..io.fs import os_error_message

    ctrl_c = CtrlCWatch().start()
    key = None  # the setting choosing the output folder, named by a write error's fix
    try:
        if verb == "convert":
            from .convert import run as convert

            convert(args)
            return 0
        from ..engine.config import load_config

        setup_logging(console=rank() == 0)  # messages while the engine is built (e.g. weights loaded)
        cfg = load_config(args.config, args.override)
        # a read-only or unwritable output folder: before any work (the app serves and writes nothing)
        key = check_output_folder(verb, cfg) if verb in OUTPUT_KEYS else None
        if verb == "train":
            from ..engine import Engine

            Engine(cfg).train()
        else:
            from importlib import import_module

            module = {"eval": "evaluate"}.get(verb, verb)
            import_module(f"{__package__}.{module}").run(cfg)
    except NonFiniteLossError as e:
        return _fail(e, 1)
    except PpvitError as e:
        # the user's to fix: ConfigError, DataError, CheckpointError, ImageReadError, OutputFolderError
        return _fail(e, 2)
    except OSError as e:
        # a missing path, or a write that failed: read-only, permission, full disk, a file in the way; any
        # other OSError (and any other exception: a bug) keeps its traceback
        message = os_error_message(e, key if verb != "convert" else "--dst")
        if message is None:
            raise
        return _fail(str(e) if isinstance(e, FileNotFoundError) else message, 2)
    except KeyboardInterrupt as e:  # training says which checkpoint it kept (and which signal stopped it)
        print(" ".join(str(e).split()) or "interrupted", file=sys.stderr)
        return getattr(e, "exit_code", 130)
    except Exception:
        if not ctrl_c.seen:  # a bug: its traceback
            raise
        print("interrupted", file=sys.stderr)  # a Ctrl-C Paddle re-raised from inside its C++ (a PyLayer)
        return 130
    finally:
        ctrl_c.stop()
    return 0


# the folder each verb writes to, and the setting that chooses it (None: the run folder)
OUTPUT_KEYS = {"train": ("Global.output_dir", None), "eval": ("Eval.output", None),
               "export": ("Export.output", "inference"), "infer": ("Infer.output", None),
               "explain": ("Explain.output", "explain")}


def check_output_folder(verb, cfg):
    """Raise ``OutputFolderError`` (one line, exit 2) when ``verb`` could not write its output folder: checked
    before any data is read or model built. A resume writes into the checkpoint's run folder. Returns the
    setting that chooses the folder."""
    from ..engine.config import run_dir
    from ..io.fs import check_writable

    key, sub = OUTPUT_KEYS[verb]
    section, name = key.split(".")
    folder = cfg[section].get(name) if section != "Global" else None
    if verb == "train" and cfg["Global"]["checkpoints"]:
        ckpt = cfg["Global"]["checkpoints"]
        folder, key = (ckpt if os.path.isdir(ckpt) else os.path.dirname(ckpt) or "."), "Global.checkpoints"
    if folder is None:
        folder = os.path.join(run_dir(cfg), sub) if sub else run_dir(cfg)
    check_writable(folder, key)
    return key


def _fail(err, code):
    if os.environ.get("PPVIT_DEBUG"):
        raise err
    print("error: " + " ".join(str(err).split()), file=sys.stderr)  # one line, whatever the source wrote
    return code


if __name__ == "__main__":
    sys.exit(main())
