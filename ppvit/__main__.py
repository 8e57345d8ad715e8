"""``python -m ppvit train|eval|export|infer|explain|convert ...``: the ``ppvit`` command."""
import sys

from ppvit.commands.cli import main

sys.exit(main(prog="python -m ppvit"))
