"""Convert an official PyTorch checkpoint (or a .safetensors file in the PyTorch layout) to ppvit weights.

    python tools/convert_weights.py --model convit_tiny --src convit_tiny.pth \
        --dst pretrained/convit_tiny.safetensors

.pth/.pth.tar files are read without torch (and without running code from the file); see ppvit/convert.py.
Errors (unreadable file, wrong family, missing keys, shape mismatches) print one message and exit 2;
``--dst`` is only written when the conversion succeeded.
"""
import argparse
import sys

import _common  # noqa: F401  (sys.path, before ppvit is imported)


def _model_arg(text):
    import yaml

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, yaml.safe_load(value)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="registered model name, e.g. convit_tiny")
    parser.add_argument("--src", required=True, help=".pth / .pth.tar / .safetensors in the PyTorch layout")
    parser.add_argument("--dst", required=True, help="output .pdparams or .safetensors (Paddle keys)")
    parser.add_argument("--model-arg", type=_model_arg, action="append", default=[], metavar="KEY=VALUE",
                        help="model builder argument (YAML value), e.g. img_size=384; repeatable. The class "
                             "count is read from the checkpoint unless num_classes is given")
    parser.add_argument("--reader", choices=("builtin", "torch"), default="builtin",
                        help="how to read .pth files: builtin (no torch needed, never runs code from the "
                             "file) or torch (torch.load with weights_only=True)")
    args = parser.parse_args(argv)

    # ppvit's own console handler: logging.basicConfig would do nothing here, because Paddle's import (run by
    # _common with stderr redirected) already gave the root logger a handler writing into that buffer
    from ppvit.engine.logger import setup_logging

    setup_logging(console=True)
    from ppvit.convert import convert_checkpoint
    from ppvit.io import CheckpointError

    try:
        convert_checkpoint(args.model, args.src, args.dst, reader=args.reader, **dict(args.model_arg))
    except (CheckpointError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
