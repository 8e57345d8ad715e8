"""The command line shared by tools/train.py, eval.py, export.py, infer.py and explain.py (PaddleClas's
``-c``/``-o``).

User errors (config, data, checkpoint) print one line to stderr and exit 2, without a traceback
(``PPVIT_DEBUG=1`` shows it); a non-finite loss exits 1.
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
    except ValueError as e:  # ConfigError, DataError, CheckpointError and model input-size errors
        return _fail(e, 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def _fail(err, code):
    if os.environ.get("PPVIT_DEBUG"):
        raise err
    print("error: " + " ".join(str(err).split()), file=sys.stderr)  # one line, whatever the source wrote
    return code
