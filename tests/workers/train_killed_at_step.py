"""``tools/train.py`` that SIGKILLs itself right after the ``latest`` checkpoint of global step N is committed
(N = the first argument; the rest are train's arguments): a kill at a known instant, for tests/test_resume.py."""
import os
import signal
import sys

from ppvit.commands.cli import tool_main
from ppvit.engine import checkpoint as ckpt

kill_at = int(sys.argv.pop(1))
commit = ckpt.save_latest


def save_latest_then_die(run_dir, model, optimizer, scheduler, train_state, *args, **kwargs):
    commit(run_dir, model, optimizer, scheduler, train_state, *args, **kwargs)
    if train_state.global_step >= kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


ckpt.save_latest = save_latest_then_die
sys.exit(tool_main("train"))
