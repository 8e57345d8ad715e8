"""Every command of README.md and docs/*.md runs, in order, as written.

The commands are the lines of the pages' ```bash blocks (continuation lines joined, comments dropped). They
run under bash, one page after the other (README.md first, then docs/*.md in name order, so a new page is
picked up by itself), in one scratch folder that links the repository's ``tools/``, ``configs/``,
``benchmarks/``, ``scripts/`` and ``tests/`` (outputs never land in the checkout), with ``python`` and
``ppvit`` this interpreter's. Later commands use what earlier ones made, as a reader's would: the quick start's
run serves every page.

- A command ending in ``# needs: <what>`` (a GPU, the network, a second venv) is skipped, and said so.
- ``FAST``: extra arguments appended to a command that would take minutes on a CPU (fewer epochs, images or
  samples); the command itself is unchanged.
- ``PREPARE``: what a reader has before a command and a test cannot fetch (a downloaded file, a run that was
  interrupted), made just before it.
- ``CHECK``: what a command must have produced, beyond its exit code 0.
"""
import glob
import json
import os
import re
import subprocess
import sys
import resource

import numpy as np
import pytest

from tests.conftest import ROOT

LINKED = ("tools", "configs", "benchmarks", "scripts", "tests")
QUICK_START = ("python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && "
               "ppvit train -c configs/quickstart.yaml")
TEST_COMMAND = "python -m pytest -q -n 2 --dist loadfile tests"


def pages():
    """README.md, then every docs/*.md by name."""
    return ["README.md"] + sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))


def page_commands(page):
    """[(command, needs or None)] of a page's ```bash blocks, in order."""
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        text = f.read()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            needs = re.search(r"#\s*needs:\s*(.+)$", line)
            line = re.sub(r"(^|\s+)#.*$", "", line).strip()
            if line:
                cmds.append((" ".join(line.split()), needs.group(1).strip() if needs else None))
    return cmds


# ---- what a reader has before some commands -----------------------------------------------------------
def _stopped_run(work):
    """A quick-start run stopped after 2 of its epochs (Ctrl-C, a crash), in output/stopped."""
    from ppvit.engine import Engine, load_config

    Engine(load_config(os.path.join(ROOT, "configs", "quickstart.yaml"),
                       [f"Global.output_dir={work / 'output'}", "Global.run_name=stopped", *STOPPED])
           ).train(until_epoch=2)


def _official_file(model_name, path):
    """A full-size checkpoint in the official PyTorch layout (a fresh ppvit model with the key map's Linear
    transposes undone), standing in for the downloaded file."""
    import ppvit
    from tests.torch_files import save_torch_zip

    module = sys.modules[ppvit.get_model_cfg(model_name).checkpoint_filter_fn.__module__]
    transposed = module.TORCH_KEY_MAP.get("transpose", ())
    state = {}
    for k, v in ppvit.create_model(model_name).state_dict().items():
        v = v.numpy()
        state[k] = v.T if v.ndim == 2 and any(re.search(p, k) for p in transposed) else v
    save_torch_zip(state, path)


def _cifar_archive(path):
    """A small archive in the CIFAR-10 python format, standing in for the downloaded one."""
    from ppvit.data import write_cifar_archive

    rng = np.random.default_rng(0)
    write_cifar_archive(path, rng.integers(0, 255, (40, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 40),
                        rng.integers(0, 255, (20, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 20))


# ---- checks -------------------------------------------------------------------------------------------
def _history(work, run):
    with open(work / "output" / run / "history.json") as f:
        return json.load(f)["epochs"]


def _check_quick_start(work, proc, cpu_seconds):
    # CPU time, not wall time: what the training costs, whatever else the machine runs (30-50 s of wall time
    # on 2 quiet cores is 60-100 s of CPU time)
    assert cpu_seconds < 300, f"quick start took {cpu_seconds:.0f} s of CPU time"
    assert max(_history(work, "quickstart")["val_top1"]) >= 0.90


def _check_demo_eval(work, proc, _):
    with open(work / "output" / "folder_demo" / "eval.json") as f:
        ev = json.load(f)
    assert ev["class_names"] == ["astronaut", "cat", "coffee", "rocket"] and ev["top1"] >= 0.9, ev


def _check_infer(folder, label):
    def check(work, proc, _):
        lines = [line for line in proc.stdout.splitlines() if line.startswith(folder + "/")]
        assert len(lines) == 8, proc.stdout
        assert sum(line.split(": ", 1)[1].startswith(label + " (") for line in lines) >= 6, lines
    return check


def _check_reference(work, proc, _):
    with open(os.path.join(ROOT, "docs", "config.md"), encoding="utf-8") as f:
        assert (work / "docs" / "config.md").read_text(encoding="utf-8") == f.read(), \
            "docs/config.md is stale: run  python -m ppvit.commands.help --markdown > docs/config.md"


def _check_zoo_row(work, proc, _):
    row = next(line for line in proc.stdout.splitlines() if line.startswith("| `convmixer_256_8` |"))
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        assert row in f.read().splitlines(), row


def _check_converted(model_name, dst):
    def check(work, proc, _):
        import ppvit
        from ppvit.io import load_state

        model = ppvit.create_model(model_name, pretrained=str(work / dst))
        assert set(load_state(work / dst)) == set(model.state_dict())
    return check


def _check_fine_tune(run):
    def check(work, proc, _):
        assert "re-initialised" in proc.stdout + proc.stderr
        assert (work / "output" / run / "final_model.pdparams").is_file()
    return check


def _check_ratios(work, proc, _, rows=()):
    assert re.search(r"\d+(\.\d+)?x", proc.stdout), proc.stdout
    assert "No ccache found" not in proc.stderr, proc.stderr  # Paddle's import notice is filtered
    table = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    for row in rows:  # "| <row> | notebook time, MiB | ppvit time, MiB | speed-up | ppvit/notebook memory |"
        assert any(re.match(rf"\| {re.escape(row)} \| [\d.]+ m?s, [\d.]+ MiB( \*)? \| [\d.]+ m?s, [\d.]+ MiB \| "
                            rf"[\d.]+x \| [\d.]+x \|$", line) for line in table), (row, table)


def _check_table(*rows):
    return lambda work, proc, cpu: _check_ratios(work, proc, cpu, rows)


def _check_history(run, epochs):
    def check(work, proc, _):
        assert _history(work, run)["epoch"] == list(range(1, epochs + 1)), _history(work, run)["epoch"]
    return check


STOPPED = ["Global.epochs=3", "Data.limit=256"]  # the stopped run, and its resume, kept short
SHORT = ["-o", "Data.limit=256"]
FT_SMOKE = ["-o", "Data.dataset=digits", "-o", "Data.limit=8", "-o", "Global.epochs=1", "-o", "Data.batch_size=4",
            "-o", "Data.eval_batch_size=8", "-o", "Data.num_workers=0"]
QS_EXPORT = ("python tools/export.py -c configs/quickstart.yaml "
             "-o Global.pretrained_model=output/quickstart/best_model.pdparams")
CONVERT_CONVIT = ("python tools/convert_weights.py --model convit_tiny --src convit_tiny.pth "
                  "--dst pretrained/convit_tiny.safetensors")
CONVERT_DILATE = ("python tools/convert_weights.py --model dilateformer_t --src dilateformer_tiny.pth "
                  "--dst pretrained/dilateformer_t.safetensors")
CONVERT_FIXTURE = ("python tools/convert_weights.py --model dilateformer_t --src "
                   "tests/fixtures/dilateformer_official_tiny.pth "
                   "--dst pretrained/dilateformer_tiny_fixture.safetensors "
                   "--model-arg img_size=64 --model-arg embed_dim=6 --model-arg 'depths=[1,1,1,1]' "
                   "--model-arg 'num_heads=[3,3,3,6]'")

FAST = {
    "python tools/train.py -c configs/quickstart.yaml -o Global.epochs=3 -o Global.run_name=quickstart_3ep": SHORT,
    "python tools/train.py -c configs/quickstart.yaml -o Global.checkpoints=output/quickstart_3ep -o Global.epochs=5 "
    "-o Global.extend=true": SHORT,
    "python tools/train.py -c configs/quickstart.yaml -o Global.checkpoints=output/stopped":
        [a for kv in STOPPED if kv.startswith("Data") for a in ("-o", kv)] + ["-o", "Global.epochs=3"],
    "python -m paddle.distributed.launch --nproc_per_node 2 tools/train.py -c configs/quickstart.yaml "
    "-o Global.run_name=quickstart_2proc": ["-o", "Global.epochs=1"] + SHORT,
    "python tools/train.py -c configs/conv2former_n_cifar.yaml -o Data.data_file=cifar-10-python.tar.gz":
        ["-o", "Global.epochs=1", "-o", "Data.batch_size=8", "-o", "Data.eval_batch_size=10"],
    "python tools/export.py -c configs/folder_demo.yaml": ["-o", "Export.onnx=false"],
    "python tools/train.py -c configs/filelist_demo.yaml": ["-o", "Global.epochs=1"],
    QS_EXPORT: ["-o", "Export.onnx=false"],
    "python tools/explain.py -c configs/quickstart.yaml -o Explain.model=output/quickstart/inference "
    "-o 'Explain.indices=[0,3]'": ["-o", "Explain.num_samples=50"],
    "python tools/explain.py -c configs/quickstart.yaml -o Explain.method=both -o 'Explain.indices=[0,3]'":
        ["-o", "Explain.num_samples=50"],
    "python tools/train.py -c configs/folder_demo.yaml -o Arch.name=convit_tiny -o '~Arch.dim' -o '~Arch.depth' "
    "-o Global.run_name=folder_demo_convit -o Global.epochs=1": ["-o", "Data.limit=16"],
    "python scripts/model_zoo.py --markdown": ["--models", "convmixer_256_8"],
    "python tools/train.py -c configs/convit_tiny_ft.yaml": FT_SMOKE,
    "python tools/train.py -c configs/dilateformer_t_ft.yaml": FT_SMOKE,
    "python tools/train.py -c configs/dilateformer_t.yaml -o Data.dataset=digits -o Data.limit=64 -o Global.epochs=1 "
    "-o Arch.img_size=64 -o Data.batch_size=8 -o Data.eval_batch_size=16": ["-o", "Data.limit=8"],
    "python benchmarks/bench_dilateformer_attention.py": ["--size", "14", "--dim", "24", "--heads", "3", "--repeats",
                                                          "1", "--warmup", "0", "--model-size", "64"],
    "python benchmarks/bench_convit_gpsa.py": ["-b", "1", "--iters", "1", "--warmup", "0", "--img-size", "64"],
    "python benchmarks/bench_predictor.py": ["-m", "conv2former_n_cifar", "-b", "2", "-n", "1", "--warmup", "0",
                                             "--lime-samples", "20", "--lime-runs", "1"],
    "python benchmarks/bench_predictor.py --lime-only": ["--lime-samples", "20", "--lime-runs", "2"],
    "python benchmarks/bench_train_speed.py": ["--models", "convmixer_256_8", "--quick", "--repeats", "1"],
}
PREPARE = {
    "python tools/train.py -c configs/quickstart.yaml -o Global.checkpoints=output/stopped": _stopped_run,
    "python tools/train.py -c configs/conv2former_n_cifar.yaml -o Data.data_file=cifar-10-python.tar.gz":
        lambda work: _cifar_archive(work / "cifar-10-python.tar.gz"),
    CONVERT_CONVIT: lambda work: _official_file("convit_tiny", work / "convit_tiny.pth"),
    CONVERT_DILATE: lambda work: _official_file("dilateformer_t", work / "dilateformer_tiny.pth"),
    "python -m ppvit.commands.help --markdown > docs/config.md": lambda work: os.makedirs(work / "docs",
                                                                                          exist_ok=True),
}
CHECK = {
    "ppvit train -c configs/quickstart.yaml": _check_quick_start,
    "python tools/train.py -c configs/quickstart.yaml -o Global.checkpoints=output/stopped":
        _check_history("stopped", 3),
    "python tools/train.py -c configs/quickstart.yaml -o Global.checkpoints=output/quickstart_3ep -o Global.epochs=5 "
    "-o Global.extend=true": _check_history("quickstart_3ep", 5),
    "python tools/eval.py -c configs/folder_demo.yaml": _check_demo_eval,
    "python tools/infer.py -c configs/folder_demo.yaml -o Infer.images=data/photos/val/cat":
        _check_infer("data/photos/val/cat", "cat"),
    "python tools/infer.py -c configs/folder_demo.yaml -o Infer.images=data/photos/val/rocket -o Infer.topk=2":
        _check_infer("data/photos/val/rocket", "rocket"),
    "python -m ppvit.commands.help --markdown > docs/config.md": _check_reference,
    "python scripts/model_zoo.py --markdown": _check_zoo_row,
    CONVERT_CONVIT: _check_converted("convit_tiny", "pretrained/convit_tiny.safetensors"),
    CONVERT_DILATE: _check_converted("dilateformer_t", "pretrained/dilateformer_t.safetensors"),
    "python tools/train.py -c configs/convit_tiny_ft.yaml": _check_fine_tune("convit_tiny_ft"),
    "python tools/train.py -c configs/dilateformer_t_ft.yaml": _check_fine_tune("dilateformer_t_ft"),
    **{cmd: _check_ratios for cmd in FAST if cmd.startswith("python benchmarks/")},
    "python benchmarks/bench_dilateformer_attention.py": _check_table(
        "whole module, forward", "whole module, forward + backward", "one dilation group, forward",
        "one dilation group, forward + backward", "DilateFormer-T 64x64, forward"),
    "python benchmarks/bench_convit_gpsa.py": _check_table(
        "convit_tiny GPSA (dim 192, 4 heads), forward", "convit_tiny GPSA (dim 192, 4 heads), forward + backward",
        "convit_base GPSA (dim 768, 16 heads), forward", "whole convit_tiny, forward + backward"),
}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The reader's folder, and a bin/ whose python, python3 and ppvit are this interpreter's."""
    work = tmp_path_factory.mktemp("reader")
    for name in LINKED:
        os.symlink(os.path.join(ROOT, name), work / name)
    bin_dir = tmp_path_factory.mktemp("bin")
    script = os.path.join(os.path.dirname(sys.executable), "ppvit")
    # wrappers, not symlinks: a venv's interpreter finds its venv from the path it is started by
    for name, target in (("python", f'"{sys.executable}"'), ("python3", f'"{sys.executable}"'),
                         ("ppvit", f'"{script}"' if os.path.isfile(script) else f'"{sys.executable}" -m ppvit')):
        with open(bin_dir / name, "w") as f:
            f.write(f'#!/bin/sh\nexec {target} "$@"\n')
        os.chmod(bin_dir / name, 0o755)
    return work, str(bin_dir)


def _children_cpu():
    """CPU seconds of this process's finished children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(cmd, work, bin_dir, extra=(), timeout=900):
    path = os.environ.get("PYTHONPATH")
    env = dict(os.environ, PATH=bin_dir + os.pathsep + os.environ["PATH"],
               PYTHONPATH=ROOT + (os.pathsep + path if path else ""))
    line = cmd + "".join(" " + (a if re.fullmatch(r"[\w.=/:,+-]+", a) else f"'{a}'") for a in extra)
    proc = subprocess.run(["bash", "-c", line], cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{line} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_every_page_has_commands_and_every_listed_command_is_in_a_page():
    everything = {cmd for page in pages() for cmd, _ in page_commands(page)}
    assert QUICK_START in everything and TEST_COMMAND in everything
    listed = set(FAST) | set(PREPARE) | (set(CHECK) - {"ppvit train -c configs/quickstart.yaml"})
    stale = sorted(listed - everything)
    assert not stale, f"commands listed here but gone from the docs: {stale}"
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    # the quick start's install is what CI does before running the tests; CI runs exactly the test command
    assert "python3 -m venv .venv" in ci and ". .venv/bin/activate" in ci and "pip install -q -e '.[test]'" in ci
    assert TEST_COMMAND in [line.strip() for line in ci.splitlines()], ".ci/run must run the README's test command"


def _anchor(heading):
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_links_between_pages_resolve():
    """Every relative link of README.md and docs/*.md names a file of the repository, and a #section of a
    page one of its headings."""
    broken = []
    for page in pages():
        with open(os.path.join(ROOT, page), encoding="utf-8") as f:
            text = f.read()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target):
                continue
            path, _, anchor = target.partition("#")
            full = os.path.normpath(os.path.join(ROOT, os.path.dirname(page), path)) if path else \
                os.path.join(ROOT, page)
            if not os.path.exists(full):
                broken.append(f"{page}: {target}")
            elif anchor:
                with open(full, encoding="utf-8") as f:
                    headings = [_anchor(h) for h in re.findall(r"^#+ (.+)$", f.read(), flags=re.M)]
                if anchor not in headings:
                    broken.append(f"{page}: {target}")
    assert not broken, broken


@pytest.mark.parametrize("page", pages())
def test_page_commands_run_in_order(page, work):
    work, bin_dir = work
    skipped = []
    for cmd, needs in page_commands(page):
        if needs:
            skipped.append(f"{cmd}  (needs {needs})")
            continue
        if cmd == TEST_COMMAND:  # this very suite: .ci/run runs it (checked above)
            continue
        if cmd == QUICK_START:  # the venv and install are CI's (checked above); the training runs here
            cmd = cmd.rsplit(" && ", 1)[1]
        if cmd in PREPARE:
            PREPARE[cmd](work)
        start = _children_cpu()
        proc = run(cmd, work, bin_dir, FAST.get(cmd, ()))
        if cmd in CHECK:
            CHECK[cmd](work, proc, _children_cpu() - start)
    if skipped:
        print(f"{page}: skipped\n  " + "\n  ".join(skipped))


def test_benchmarks_find_pytorch_through_an_option_or_the_environment(tmp_path):
    """Without torch here, ``--torch-python`` / ``PPVIT_TORCH_PYTHON`` runs the benchmark again under that
    Python, with its arguments and the repository on PYTHONPATH; a path that is no Python is one error line."""
    try:
        import torch  # noqa: F401
        pytest.skip("torch is importable in this Python: the benchmarks use it directly")
    except ImportError:
        pass
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/args\necho "$PYTHONPATH" > {tmp_path}/path\n')
    fake.chmod(0o755)
    script = os.path.join(ROOT, "benchmarks", "bench_train_speed.py")
    env = {k: v for k, v in os.environ.items() if k != "PPVIT_TORCH_PYTHON"}
    for argv, extra_env in (([f"--torch-python={fake}", "--quick"], {}),
                            (["--quick"], {"PPVIT_TORCH_PYTHON": str(fake)})):
        proc = subprocess.run([sys.executable, script, *argv], env=dict(env, **extra_env), capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0 and f"running under {fake}" in proc.stdout, proc.stderr
        assert (tmp_path / "args").read_text().split() == [script, *argv]
        assert (tmp_path / "path").read_text().strip().split(os.pathsep)[0] == ROOT
    proc = subprocess.run([sys.executable, script, "--torch-python", str(tmp_path / "nothing")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.startswith("error: --torch-python / PPVIT_TORCH_PYTHON: "), proc.stderr
    # --lime-only takes no model-table options
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_predictor.py"), "--lime-only",
                           "-n", "3"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--lime-only" in proc.stderr and "(-n) do not apply" in proc.stderr, proc.stderr
