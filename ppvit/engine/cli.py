"""The command line shared by tools/train.py, eval.py, export.py, infer.py and explain.py (PaddleClas's
``-c``/``-o``).

The error contract (ppvit/errors.py): a ``PpvitError`` (config, data, checkpoint: something the user can fix)
prints one ``error:`` line to stderr and exits 2 (``PPVIT_DEBUG=1`` shows the traceback); a run stopped by a
non-finite loss or weights exits 1 and Ctrl-C 130, each with one line saying what was kept. Anything else is a
bug and keeps its traceback.
"""
import argparse
import os
import sys


def parse_args(argv=None, description=None):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("-c", "--config", required=True, help="YAML config, e.g. configs/quickstart.yaml")
    p.add_argument("-o", "--override", action="append", default=[], metavar="Section.key=value",
                   help="override a config key (repeatable), e.g. -o Global.epochs=5 -o Data.limit=64")
    return p.parse_args(argv)


def main(mode, argv=None):
    """Run ``mode`` ('train', 'eval', 'export', 'infer' or 'explain') from command-line arguments; returns
    the exit code."""
    args = parse_args(argv, f"ppvit {mode}")
    from .builder import rank
    from .config import load_config
    from .engine import Engine
    from . import predict
    from .logger import setup_logging
    from ..errors import PpvitError
    from .trainer import NonFiniteLossError

    setup_logging(console=rank() == 0)  # messages while the engine is built (e.g. weights loaded)
    try:
        cfg = load_config(args.config, args.override)
        if mode in ("train", "eval"):
            engine = Engine(cfg, mode=mode)
            engine.train() if mode == "train" else engine.evaluate()
            if mode == "eval":
                predict.save_eval_grid(engine)  # notebook 004's show_images: <run dir>/predictions.png
        else:
            getattr(predict, mode)(cfg)  # export / infer / explain
    except NonFiniteLossError as e:
        return _fail(e, 1)
    except (PpvitError, FileNotFoundError, PermissionError, IsADirectoryError) as e:  # the user's to fix
        return _fail(e, 2)
    except KeyboardInterrupt as e:  # training says which checkpoint it kept
        print(" ".join(str(e).split()) or "interrupted", file=sys.stderr)
        return 130
    return 0


def _fail(err, code):
    if os.environ.get("PPVIT_DEBUG"):
        raise err
    print("error: " + " ".join(str(err).split()), file=sys.stderr)  # one line, whatever the source wrote
    return code
