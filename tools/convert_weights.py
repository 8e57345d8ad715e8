"""Convert an official PyTorch checkpoint (or a .safetensors file in the PyTorch layout) to ppvit weights.

    python tools/convert_weights.py --model convit_tiny --src convit_tiny.pth \
        --dst pretrained/convit_tiny.safetensors

The same as ``ppvit convert ...``. .pth/.pth.tar files are read without torch (and without running code from
the file); see ppvit/commands/convert.py. Errors (unreadable file, wrong family, missing keys, shape
mismatches) print one message and exit 2; ``--dst`` is only written when the conversion succeeded.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))  # a clean clone, as PaddleClas
from ppvit.commands.cli import tool_main  # noqa: E402  (sets OMP_NUM_THREADS before Paddle is imported)


def main(argv=None):
    return tool_main("convert", argv)


if __name__ == "__main__":
    sys.exit(main())
