"""Every command in README.md is run here.

Commands run as written, from a scratch folder that links the repository's ``tools/`` and ``configs/``
(so their outputs never land in the checkout), with ``-o Global.output_dir=...`` pointing into it.
Where a command would take many minutes on a CPU, the extra ``-o`` overrides it gets are listed beside it
in ``COMMANDS``. Commands that need hardware or downloads CI does not have say so and are skipped; the README
marks them the same way.
"""
import json
import os
import re
import shlex
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import ROOT

README = os.path.join(ROOT, "README.md")
QUICK_START = ("python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && "
               "ppvit train -c configs/quickstart.yaml")
TEST_COMMAND = "python -m pytest -q tests"


def readme_commands():
    """Shell commands of the README's ```bash blocks (continuation lines joined, comments dropped)."""
    text = open(README, encoding="utf-8").read()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        block = block.replace("\\\n", " ")
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if line and not line.startswith("#"):
                cmds.append(" ".join(line.split()))
    return cmds


@pytest.fixture
def workdir(tmp_path):
    for name in ("tools", "configs"):
        os.symlink(os.path.join(ROOT, name), tmp_path / name)
    return tmp_path


def run(cmd, cwd, extra=(), timeout=900):
    """Run a README command line (``python`` is this interpreter) plus extra arguments."""
    argv = shlex.split(cmd)
    if argv[0] == "python":
        argv[0] = sys.executable
    elif argv[0] == "ppvit":  # the console script beside this interpreter, else the same main as a module
        script = os.path.join(os.path.dirname(sys.executable), "ppvit")
        argv[:1] = [script] if os.path.isfile(script) else [sys.executable, "-m", "ppvit"]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(argv + list(extra), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def out(workdir):
    return [f"-o", f"Global.output_dir={workdir / 'output'}"]


def best_top1(run_dir):
    with open(os.path.join(run_dir, "history.json")) as f:
        return max(json.load(f)["epochs"]["val_top1"])


# ---- the handlers ------------------------------------------------------------------------------------
def quick_start(workdir):
    # the venv + pip part is what .ci/run does before the tests; the training part runs here, timed, through
    # the installed `ppvit` command (or, where this interpreter has ppvit on PYTHONPATH only, its module form)
    ci = open(os.path.join(ROOT, ".ci", "run")).read()
    assert "python3 -m venv .venv" in ci and ". .venv/bin/activate" in ci and "pip install -q -e '.[test]'" in ci
    start = time.time()
    run("ppvit train -c configs/quickstart.yaml", workdir, out(workdir))
    elapsed = time.time() - start
    top1 = best_top1(workdir / "output" / "quickstart")
    assert elapsed < 300, f"quick start took {elapsed:.0f} s"
    assert top1 >= 0.90, f"quick start reached only {top1:.3f}"


def test_command(workdir):
    ci = open(os.path.join(ROOT, ".ci", "run")).read().splitlines()
    assert TEST_COMMAND in [line.strip() for line in ci], ".ci/run must run the README's test command"


def train_on_cifar_file(workdir):
    from ppvit.data import write_cifar_archive

    rng = np.random.default_rng(0)
    archive = workdir / "cifar-10-python.tar.gz"
    write_cifar_archive(archive, rng.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 40),
                        rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 20))
    cmd = ("python tools/train.py -c configs/conv2former_n_cifar.yaml "
           "-o Data.data_file=/path/to/cifar-10-python.tar.gz").replace("/path/to/cifar-10-python.tar.gz",
                                                                        str(archive))
    run(cmd, workdir, out(workdir) + ["-o", "Global.epochs=1", "-o", "Data.batch_size=8",
                                      "-o", "Data.num_workers=0"])
    assert (workdir / "output" / "conv2former_n_cifar" / "final_model.pdparams").exists()


def train_resume_eval(workdir):
    run(CMD_TRAIN_3, workdir, out(workdir))
    run3 = workdir / "output" / "quickstart_3ep"
    assert json.load(open(run3 / "history.json"))["epochs"]["epoch"] == [1, 2, 3]
    # an interrupted quick start (stopped after 2 of its 10 epochs), resumed as the README says
    from ppvit.engine import Engine, load_config

    Engine(load_config(os.path.join(ROOT, "configs", "quickstart.yaml"),
                       [f"Global.output_dir={workdir / 'output'}"])).train(until_epoch=2)
    run(CMD_RESUME, workdir, out(workdir))
    run_dir = workdir / "output" / "quickstart"
    epochs = json.load(open(run_dir / "history.json"))["epochs"]["epoch"]
    assert epochs == list(range(1, 11)), epochs
    # the finished 3-epoch run, extended to 5 epochs in its own folder
    run(CMD_EXTEND, workdir, out(workdir))
    assert json.load(open(run3 / "history.json"))["epochs"]["epoch"] == [1, 2, 3, 4, 5]
    proc = run(CMD_EVAL, workdir, out(workdir))
    assert "top-1" in (proc.stdout + proc.stderr).lower() or "top1" in (proc.stdout + proc.stderr).lower()


CMD_TRAIN_3 = "python tools/train.py -c configs/quickstart.yaml -o Global.epochs=3 -o Global.run_name=quickstart_3ep"
CMD_RESUME = "python tools/train.py -c configs/quickstart.yaml -o Global.checkpoints=output/quickstart"
CMD_EXTEND = ("python tools/train.py -c configs/quickstart.yaml -o Global.checkpoints=output/quickstart_3ep "
              "-o Global.epochs=5 -o Global.extend=true")
CMD_EVAL = "python tools/eval.py -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/best_model.pdparams"


def needs_gpus(workdir):
    pytest.skip("needs 4 GPUs; its CPU twin (--nproc_per_node 2) runs below")


def needs_gpu_wheel(workdir):
    pytest.skip("installs Paddle's GPU wheel: not for a CPU machine")


def cpu_launch(workdir):
    run("python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c configs/quickstart.yaml",
        workdir, out(workdir) + ["-o", "Global.epochs=1"])
    assert (workdir / "output" / "quickstart" / "final_model.pdparams").exists()


def _official_file(workdir, model_name, filename):
    """A full-size checkpoint in the official PyTorch layout (made from a fresh ppvit model by undoing the
    key map's Linear transposes), saved under the name the README downloads."""
    import ppvit
    from tests.torch_files import save_torch_zip

    module = sys.modules[ppvit.get_model_cfg(model_name).checkpoint_filter_fn.__module__]
    transposed = module.TORCH_KEY_MAP.get("transpose", ())
    state = {}
    for k, v in ppvit.create_model(model_name).state_dict().items():
        v = v.numpy()
        if v.ndim == 2 and any(re.search(p, k) for p in transposed):
            v = v.T
        state[k] = v
    save_torch_zip(state, workdir / filename)
    return state


def convert(workdir, cmd, model_name, filename, dst):
    _official_file(workdir, model_name, filename)
    run(cmd, workdir)
    from ppvit.io import load_state

    import ppvit
    assert set(load_state(workdir / dst)) == set(ppvit.create_model(model_name).state_dict())


def convert_convit(workdir):
    convert(workdir, COMMANDS_CONVERT_CONVIT, "convit_tiny", "convit_tiny.pth", "pretrained/convit_tiny.safetensors")


def convert_dilateformer(workdir):
    convert(workdir, COMMANDS_CONVERT_DILATE, "dilateformer_t", "dilateformer_tiny.pth",
            "pretrained/dilateformer_t.safetensors")


FT_SMOKE = ["-o", "Data.dataset=digits", "-o", "Data.limit=8", "-o", "Global.epochs=1", "-o", "Data.batch_size=4",
            "-o", "Data.eval_batch_size=8", "-o", "Data.num_workers=0"]


def fine_tune(workdir, config, model_name, filename, convert_cmd, dst):
    convert(workdir, convert_cmd, model_name, filename, dst)
    proc = run(f"python tools/train.py -c configs/{config}", workdir, out(workdir) + FT_SMOKE)
    assert "re-initialised" in proc.stdout + proc.stderr
    assert (workdir / "output" / config.replace(".yaml", "") / "final_model.pdparams").exists()


def fine_tune_convit(workdir):
    fine_tune(workdir, "convit_tiny_ft.yaml", "convit_tiny", "convit_tiny.pth", COMMANDS_CONVERT_CONVIT,
              "pretrained/convit_tiny.safetensors")


def fine_tune_dilateformer(workdir):
    fine_tune(workdir, "dilateformer_t_ft.yaml", "dilateformer_t", "dilateformer_tiny.pth", COMMANDS_CONVERT_DILATE,
              "pretrained/dilateformer_t.safetensors")


def export_infer_explain_tools(workdir):
    """export/infer/explain: run exactly as written by tests/test_export_infer_explain_tools.py (after a short
    training run and with a folder of images), which checks their outputs; here: that those are the README's
    lines."""
    from tests import test_export_infer_explain_tools as t

    cmds = readme_commands()
    for cmd in (t.EXPORT_CMD, t.INFER_CMD, t.EXPLAIN_CMD, t.EXPLAIN_PREDICTOR_CMD, t.EVAL_PREDICTOR_CMD):
        assert " ".join(cmd.split()) in cmds, cmd


def benchmarks(workdir):
    """The benchmark scripts at toy sizes (their figures in the README come from full-size runs): each prints
    its ratios, the first two every row of their README table, and none shows Paddle's import notices."""
    for script, extra, rows in [
        ("bench_dilateformer_attention.py", ["--size", "14", "--dim", "24", "--heads", "3", "--repeats", "1",
                                             "--warmup", "0", "--model-size", "64"],
         ["whole module, forward", "whole module, forward + backward", "one dilation group, forward",
          "one dilation group, forward + backward", "DilateFormer-T 64x64, forward"]),
        ("bench_convit_gpsa.py", ["-b", "1", "--iters", "1", "--warmup", "0", "--img-size", "64"],
         ["convit_tiny GPSA (dim 192, 4 heads), forward", "convit_tiny GPSA (dim 192, 4 heads), forward + backward",
          "convit_base GPSA (dim 768, 16 heads), forward", "whole convit_tiny, forward + backward"]),
        ("bench_predictor.py", ["-m", "conv2former_n_cifar", "-b", "2", "-n", "1", "--warmup", "0",
                                "--lime-samples", "20", "--lime-runs", "1"], []),
        ("bench_train_speed.py", ["--models", "convmixer_256_8", "--quick", "--repeats", "1"], []),
    ]:
        proc = run(f"python benchmarks/{script}", ROOT, extra)
        assert re.search(r"\d+(\.\d+)?x", proc.stdout), proc.stdout  # prints ratios
        assert "No ccache found" not in proc.stderr, proc.stderr
        table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
        for row in rows:  # "| <row> | notebook time, MiB | ppvit time, MiB | speed-up | ppvit/notebook memory |"
            assert any(re.match(rf"\| {re.escape(row)} \| [\d.]+ m?s, [\d.]+ MiB( \*)? \| [\d.]+ m?s, [\d.]+ MiB \| "
                                rf"[\d.]+x \| [\d.]+x \|$", line) for line in table), (row, table)
    # the LIME timing alone: its line and no model table (and no PyTorch import)
    proc = run("python benchmarks/bench_predictor.py --lime-only", ROOT, ["--lime-samples", "20", "--lime-runs", "2"])
    assert re.search(r"^LIME, 20 samples, conv2former_n_cifar 32x32 through Predictor\(\) \(\w+\): [\d.]+ s median "
                     r"of [\d.]+, [\d.]+;", proc.stdout, flags=re.M), proc.stdout
    assert "images/s  vs dygraph" not in proc.stdout and "torch not used" in proc.stdout, proc.stdout
    bad = subprocess.run([sys.executable, "benchmarks/bench_predictor.py", "--lime-only", "-n", "3"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--lime-only" in bad.stderr and "(-n) do not apply" in bad.stderr, bad.stderr


DEMO_CLASSES = ["astronaut", "cat", "coffee", "rocket"]


def own_images(workdir):
    """The "Train on your own images" lines: the photo demo as a folder tree (the full 8-epoch run the README
    describes) and as file lists (one epoch), with eval, export and infer using the folder names."""
    proc = run("python -m ppvit.data.demo data/photos", workdir)
    assert "No ccache found" not in proc.stderr, proc.stderr  # Paddle's import notice: the demo needs no Paddle
    assert sorted(os.listdir(workdir / "data" / "photos" / "train")) == DEMO_CLASSES
    run("python tools/train.py -c configs/folder_demo.yaml", workdir, out(workdir))
    run_dir = workdir / "output" / "folder_demo"
    assert best_top1(run_dir) >= 0.9
    run("python tools/eval.py -c configs/folder_demo.yaml", workdir, out(workdir))
    ev = json.load(open(run_dir / "eval.json"))
    assert ev["class_names"] == DEMO_CLASSES and ev["count"] == 32 and ev["top1"] >= 0.9
    run("python tools/export.py -c configs/folder_demo.yaml", workdir, out(workdir) + ["-o", "Export.onnx=false"])
    assert json.load(open(run_dir / "inference" / "inference.meta.json"))["labels"] == DEMO_CLASSES
    proc = run("python tools/infer.py -c configs/folder_demo.yaml -o Infer.images=data/photos/val/cat", workdir,
               out(workdir))
    lines = [line for line in proc.stdout.splitlines() if line.startswith("data/photos/val/cat/")]
    assert len(lines) == 8, proc.stdout
    assert sum(line.split(": ", 1)[1].startswith("cat (") for line in lines) >= 6, lines
    run("python tools/train.py -c configs/filelist_demo.yaml", workdir, out(workdir) + ["-o", "Global.epochs=1"])
    log = open(workdir / "output" / "filelist_demo" / "train.log").read()
    assert "data filelist: 96 train / 32 test images" in log


COMMANDS_CONVERT_CONVIT = ("python tools/convert_weights.py --model convit_tiny --src convit_tiny.pth "
                           "--dst pretrained/convit_tiny.safetensors")
COMMANDS_CONVERT_DILATE = ("python tools/convert_weights.py --model dilateformer_t --src dilateformer_tiny.pth "
                           "--dst pretrained/dilateformer_t.safetensors")

TOOLS = export_infer_explain_tools
COMMANDS = {
    QUICK_START: quick_start,
    TEST_COMMAND: test_command,
    "python tools/train.py -c configs/conv2former_n_cifar.yaml -o Data.data_file=/path/to/cifar-10-python.tar.gz":
        train_on_cifar_file,
    CMD_TRAIN_3: train_resume_eval,
    CMD_RESUME: train_resume_eval,
    CMD_EXTEND: train_resume_eval,
    CMD_EVAL: train_resume_eval,
    "pip uninstall -y paddlepaddle && pip install paddlepaddle-gpu==3.3.1 -i "
    "https://www.paddlepaddle.org.cn/packages/stable/cu126/": needs_gpu_wheel,
    "python -m paddle.distributed.launch --gpus 0,1,2,3 tools/train.py -c configs/dilateformer_t.yaml": needs_gpus,
    "python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c configs/quickstart.yaml": cpu_launch,
    COMMANDS_CONVERT_CONVIT: convert_convit,
    "python benchmarks/bench_dilateformer_attention.py": benchmarks,
    "python benchmarks/bench_convit_gpsa.py": benchmarks,
    "python benchmarks/bench_predictor.py": benchmarks,
    "python benchmarks/bench_predictor.py --lime-only": benchmarks,
    "python benchmarks/bench_train_speed.py": benchmarks,
    COMMANDS_CONVERT_DILATE: convert_dilateformer,
    "python tools/train.py -c configs/convit_tiny_ft.yaml": fine_tune_convit,
    "python tools/export.py -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/best_model.pdparams":
        TOOLS,
    "python tools/infer.py -c configs/quickstart.yaml -o Infer.images=my_images -o Infer.topk=3": TOOLS,
    "python tools/explain.py -c configs/quickstart.yaml -o Global.pretrained_model=output/quickstart/best_model.pdparams"
    " -o 'Explain.indices=[0,3]'": TOOLS,
    "python tools/eval.py -c configs/quickstart.yaml -o Eval.model=output/quickstart/inference": TOOLS,
    "python tools/explain.py -c configs/quickstart.yaml -o Explain.model=output/quickstart/inference"
    " -o 'Explain.indices=[0,3]'": TOOLS,
    "python tools/train.py -c configs/dilateformer_t_ft.yaml": fine_tune_dilateformer,
    "python -m ppvit.data.demo data/photos": own_images,
    "python tools/train.py -c configs/folder_demo.yaml": own_images,
    "python tools/eval.py -c configs/folder_demo.yaml": own_images,
    "python tools/export.py -c configs/folder_demo.yaml": own_images,
    "python tools/infer.py -c configs/folder_demo.yaml -o Infer.images=data/photos/val/cat": own_images,
    "python tools/train.py -c configs/filelist_demo.yaml": own_images,
}


def test_every_readme_command_is_covered():
    cmds = readme_commands()
    assert QUICK_START in cmds and TEST_COMMAND in cmds
    unknown = [c for c in cmds if c not in COMMANDS]
    assert not unknown, f"README commands without a test here: {unknown}"
    stale = [c for c in COMMANDS if c not in cmds]
    assert not stale, f"commands tested here but gone from the README: {stale}"


# one test per handler (several README lines share the train/resume/eval sequence)
HANDLERS = list(dict.fromkeys(COMMANDS.values()))


@pytest.mark.parametrize("handler", HANDLERS, ids=[h.__name__ for h in HANDLERS])
def test_readme_command(handler, workdir):
    handler(workdir)
