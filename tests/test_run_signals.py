"""SIGTERM (a job scheduler, ``docker stop``) and SIGHUP (a closed terminal) stop training as Ctrl-C does: the
checkpoint is kept, the DataLoader workers are stopped (none outlives the run), one line, exit 128 + the signal."""
import os
import signal
import subprocess
import sys
import time

import pytest

from ppvit.engine.checkpoint import load_latest
from runs import ROOT, TINY, screen_lines, write_config


def _children(pid):
    """Pids whose parent is ``pid`` (from /proc)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(name))
    return out


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_stop_signal_keeps_the_checkpoint_and_stops_the_workers(tmp_path, signum):
    cfg = dict(TINY, Data=dict(TINY["Data"], limit=None, num_workers=2))  # long enough to be stopped
    config = write_config(tmp_path, cfg)
    run = tmp_path / "out" / "tiny"
    args = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "-c", config, "-o",
            f"Global.output_dir={tmp_path / 'out'}", "-o", "Global.save_interval=2", "-o", "Global.epochs=3"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), start_new_session=True)
    workers = []
    try:
        deadline = time.time() + 200
        while time.time() < deadline and proc.poll() is None:
            workers = _children(proc.pid)
            if len(workers) >= 2 and (run / "latest.pdstate").exists():
                break
            time.sleep(0.2)
        assert proc.poll() is None and len(workers) >= 2, "the run ended (or had no workers) before the signal"
        proc.send_signal(signum)
        stdout, stderr = proc.communicate(timeout=120)  # no hang
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + signum, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    shown = [line for line in screen_lines(stderr) if line.strip()]
    name = signal.Signals(signum).name
    assert [line for line in shown if "interrupted" in line] == [shown[-1]], stderr[-2000:]
    assert shown[-1].startswith(f"interrupted ({name})") and "Global.checkpoints" in shown[-1], shown[-1]
    assert load_latest(str(run))["meta"]["global_step"] >= 2  # the checkpoint it names is whole
    time.sleep(0.5)
    assert not [w for w in workers if _alive(w)], "DataLoader workers outlived the run"
