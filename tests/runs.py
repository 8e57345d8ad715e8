"""Helpers for tests that drive the tools the way a user does: a tiny BatchNorm config, running a tool in a
subprocess, hashing a run folder, and reading stderr as a terminal shows it."""
import hashlib
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A ConvMixer (BatchNorm after every conv) at width 16, depth 2, on 16x16 digits: 4 steps per epoch, seconds
# per run on a CPU.
TINY = {
    "Global": {"device": "cpu", "seed": 3, "epochs": 2, "run_name": "tiny"},
    "Arch": {"name": "convmixer_256_8", "num_classes": 10, "dim": 16, "depth": 2, "img_size": 16},
    "Optimizer": {"name": "AdamW", "lr": 0.01, "weight_decay": 0.005},
    "Data": {"dataset": "digits", "transform": "basic", "limit": 64, "batch_size": 16,
             "eval_batch_size": 64, "num_workers": 0},
}


def write_config(folder, cfg=None, name="tiny.yaml"):
    path = os.path.join(os.fspath(folder), name)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(cfg or TINY, f)
    return path


def tool(name, config, overrides=(), cwd=None, env=None, timeout=300, preexec_fn=None):
    """``python tools/<name> -c config -o ...`` -> CompletedProcess (text)."""
    args = [sys.executable, os.path.join(ROOT, "tools", name)]
    if config is not None:
        args += ["-c", os.fspath(config)]
    for o in overrides:
        args += ["-o", o]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PPVIT_OFFLINE="1", **(env or {})),
                          preexec_fn=preexec_fn)


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def snapshot(folder):
    """{relative path: (sha256, mtime_ns)} of every file under ``folder`` (hidden ones included)."""
    out = {}
    for base, _, files in os.walk(folder):
        for f in files:
            p = os.path.join(base, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, folder)] = (hashlib.sha256(fh.read()).hexdigest(), os.stat(p).st_mtime_ns)
    return out


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def screen_lines(text):
    """The lines a terminal shows for ``text``: a carriage return moves back to the line start and the
    following characters overwrite what was there (as tqdm's progress bar relies on)."""
    lines = []
    for raw in text.split("\n"):
        shown = ""
        for part in raw.split("\r"):
            shown = part + shown[len(part):]
        lines.append(shown.rstrip())
    return lines


def error_lines(proc):
    """The stderr lines, as shown on a terminal, that start with ``error:``."""
    return [line for line in screen_lines(proc.stderr) if line.startswith("error: ")]


def one_error(proc, code=2):
    """Assert exit ``code``, no traceback and exactly one ``error:`` line; return that line."""
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    errors = error_lines(proc)
    assert len(errors) == 1, proc.stderr[-3000:]
    return errors[0]


def eval_logged_paths(proc):
    """{"metrics" | "confusion matrix" | "reliability diagram" | "prediction grid": path} from an eval run's log
    lines (each at most once)."""
    found = re.findall(r"^(metrics|confusion matrix|reliability diagram|prediction grid): (.+)$", proc.stdout, re.M)
    assert len(found) == len(dict(found)), proc.stdout[-3000:]
    return dict(found)
