"""Paddle's noise that says nothing to a user, filtered where ppvit's programs meet it: the import notices
(tools, notebooks, benchmarks: ``quiet_paddle_import``) and the glog warning of every export."""
import os
import subprocess
import sys

import paddle
import pytest

import ppvit
from ppvit.utils import drop_stderr_lines
from tests.conftest import ROOT

QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")
EXPORT_NOTICE = "not support input out tensor for now"


def test_drop_stderr_lines_filters_c_level_writes_and_keeps_the_rest(capfd):
    with drop_stderr_lines("drop me"):
        os.write(2, b"W1130 eager_utils.cc] drop me please\n")  # as glog writes: straight to fd 2
        os.write(2, b"a real problem\n")
        os.write(2, b"W1130 another drop me\nand a last one, kept\n")
    err = capfd.readouterr().err
    assert err.splitlines() == ["a real problem", "and a last one, kept"]


def test_quiet_paddle_import_in_a_fresh_interpreter():
    code = ("import sys\nfrom ppvit.utils import quiet_paddle_import\nassert 'paddle' not in sys.modules\n"
            "quiet_paddle_import()\nimport os\nprint(os.environ['OMP_NUM_THREADS'])")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env=dict(env, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout) == len(os.sched_getaffinity(0))
    assert "No ccache found" not in proc.stderr and "OMP_NUM_THREADS set to" not in proc.stderr, proc.stderr


def test_export_prints_no_paddle_notice(tmp_path):
    """``ppvit export`` on fresh quick-start weights: exported, and without the PIR glog warning."""
    model = ppvit.create_model("convmixer_256_8", num_classes=10, dim=64, depth=4, img_size=16)
    weights = tmp_path / "w.pdparams"
    paddle.save(model.state_dict(), str(weights))
    proc = subprocess.run([sys.executable, "-m", "ppvit", "export", "-c", QUICKSTART, "-o",
                           f"Global.output_dir={tmp_path}", "-o", f"Global.pretrained_model={weights}",
                           "-o", "Export.onnx=false"], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "quickstart" / "inference" / "inference.pdiparams").is_file()
    assert EXPORT_NOTICE not in proc.stderr + proc.stdout, proc.stderr


_FAULTS_SCRIPT = """
import resource, sys
import numpy as np
import ppvit  # tunes malloc (utils.quiet.tune_cpu_math -> keep_freed_memory); nothing else is called
def run():  # three 8 MiB activations written and freed, as a training step or a predictor run does
    a = [np.ones(1 << 21, dtype=np.float32) for _ in range(3)]
    del a
run()
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    run()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / 10
from ppvit.utils.quiet import keep_freed_memory
print(keep_freed_memory(), faults)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or __import__("platform").libc_ver()[0] != "glibc",
                    reason="malloc tuning is glibc-only")
def test_import_keeps_freed_memory_so_reallocation_does_not_fault():
    """``import ppvit`` tunes glibc so freed activations are reused (dygraph training and the CPU predictors):
    without it, each freed block goes back to the kernel and every new one is faulted in page by page (~1000
    faults per 24 MiB here). The user's own malloc settings are left alone."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def run(extra_env):
        env = {**os.environ, "PYTHONPATH": root, **extra_env}
        for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES"):
            if k not in extra_env:
                env.pop(k, None)
        out = subprocess.run([sys.executable, "-c", _FAULTS_SCRIPT], env=env, capture_output=True, text=True,
                             check=True).stdout.split()
        return out[-2] == "True", float(out[-1])

    tuned, faults = run({})
    assert tuned and faults < 50, (tuned, faults)
    tuned, faults = run({"MALLOC_TRIM_THRESHOLD_": "4096"})  # the user's choice: not overridden
    assert not tuned and faults > 500, (tuned, faults)


@pytest.mark.parametrize("script", ["bench_cpu_speed.py", "bench_vs_pytorch.py"])
def test_pytorch_only_benchmarks_refuse_without_pytorch(script):
    """The comparisons that are nothing without PyTorch stop at once with what to give (docs/benchmarks.md)."""
    env = {k: v for k, v in os.environ.items() if k != "PPVIT_TORCH_PYTHON"}
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--torch-python" in proc.stderr and "PPVIT_TORCH_PYTHON" in proc.stderr, proc.stderr
