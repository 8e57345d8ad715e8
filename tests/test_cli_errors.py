"""Bad inputs through the command line: each gives one clear message on stderr, exit code 2, no traceback,
and leaves an existing run folder exactly as it was."""
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import paddle
import pytest

from tests.runs import snapshot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")
SMALL = ["Data.limit=64", "Global.epochs=1"]


def _run(tool, config, overrides, cwd):
    args = [sys.executable, os.path.join(ROOT, "tools", tool), "-c", config]
    for o in overrides:
        args += ["-o", o]
    return subprocess.run(args, capture_output=True, text=True, timeout=300, cwd=cwd,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PPVIT_OFFLINE="1"))


def _cases(d):
    """(id, tool, config, overrides, words the message must contain). ``d`` holds the prepared files."""
    run, out = d["run"], d["out"]
    base = [f"Global.output_dir={out}"] + SMALL
    return [
        ("bad-yaml", "train.py", d["bad_yaml"], base, ["not valid YAML", "bad.yaml"]),
        ("missing-config", "train.py", os.path.join(d["tmp"], "nope.yaml"), base, ["config file not found"]),
        ("unknown-section", "train.py", QUICKSTART, base + ["Trainer.epochs=3"],
         ["unknown section 'Trainer'", "Global, Arch, Loss, Optimizer, Data"]),
        ("unknown-key", "train.py", QUICKSTART, base + ["Global.epoch=3"],
         ["unknown key Global.epoch", "did you mean epochs"]),
        ("wrong-type", "train.py", QUICKSTART, base + ["Data.batch_size=big"],
         ["Data.batch_size must be int", "'big'"]),
        ("bad-choice", "train.py", QUICKSTART, base + ["Optimizer.scheduler=step"],
         ["Optimizer.scheduler must be one of cosine, constant, onecycle"]),
        ("unknown-model", "train.py", QUICKSTART, base + ["Arch.name=convmixer_256"],
         ["Arch.name", "unknown model 'convmixer_256'", "convmixer_256_8"]),
        ("bad-model-kwarg", "train.py", QUICKSTART, base + ["Arch.dimm=32"], ["Arch", "dimm"]),
        ("unknown-transform", "train.py", QUICKSTART, base + ["Data.transform=autoaugment"],
         ["Data.transform", "autoaugment", "conv2former_cifar"]),
        ("missing-cifar-archive", "train.py", QUICKSTART,
         base + ["Data.dataset=cifar10", f"Data.data_file={d['tmp']}/none/cifar-10-python.tar.gz"],
         ["CIFAR-10 archive not found", "cifar-10-python.tar.gz", "Data.data_file"]),
        ("corrupt-cifar-archive", "train.py", QUICKSTART,
         base + ["Data.dataset=cifar10", f"Data.data_file={d['garbage']}"], [d["garbage"]]),
        ("corrupt-digits-archive", "train.py", QUICKSTART, base + [f"Data.data_file={d['garbage']}"],
         [d["garbage"]]),
        ("truncated-checkpoint", "train.py", QUICKSTART, base + [f"Global.checkpoints={d['truncated_run']}"],
         ["cannot read checkpoint", "truncated"]),
        ("missing-checkpoint", "train.py", QUICKSTART, base + [f"Global.checkpoints={d['tmp']}/no_run"],
         ["Global.checkpoints", "no resumable checkpoint"]),
        ("mismatched-checkpoint", "train.py", QUICKSTART, base + ["Arch.dim=32", f"Global.checkpoints={run}"],
         ["cannot resume", "Arch.dim (64 -> 32)"]),
        ("changed-batch-on-resume", "train.py", QUICKSTART, base + ["Data.batch_size=16",
                                                                    f"Global.checkpoints={run}"],
         ["cannot resume", "Data.batch_size (64 -> 16)"]),
        ("truncated-pretrained", "train.py", QUICKSTART, base + [f"Global.pretrained_model={d['truncated_weights']}"],
         ["cannot read weight file", "truncated"]),
        ("mismatched-pretrained", "eval.py", QUICKSTART,
         base + ["Arch.depth=2", f"Global.pretrained_model={run}/best_model.pdparams"],
         ["does not hold convmixer_256_8 weights for this config", "unexpected", "give the run folder as the config"]),
        # one key for the input size: the model's Arch.img_size, which the data pipeline follows
        ("data-image-size", "train.py", QUICKSTART, base + ["Data.image_size=32"],
         ["Data.image_size", "Arch.img_size", "-o Arch.img_size=32"]),
        ("eval-without-weights", "eval.py", QUICKSTART, [f"Global.output_dir={d['tmp']}/empty"] + SMALL,
         ["Global.pretrained_model is not set", "best_model.pdparams"]),
    ] + ([] if paddle.is_compiled_with_cuda() else [  # a GPU build would train on the GPU
        ("no-gpu", "train.py", QUICKSTART, base + ["Global.device=gpu"], ["Global.device is gpu"]),
    ])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp("cli"))
    out = os.path.join(tmp, "out")
    res = _run("train.py", QUICKSTART, [f"Global.output_dir={out}"] + SMALL, tmp)
    assert res.returncode == 0, res.stderr[-3000:]
    run = os.path.join(out, "quickstart")
    d = {"tmp": tmp, "out": out, "run": run}
    d["bad_yaml"] = os.path.join(tmp, "bad.yaml")
    with open(d["bad_yaml"], "w") as f:
        f.write("Global:\n  epochs: 1\n Arch: [unbalanced\n")
    d["garbage"] = os.path.join(tmp, "garbage.tar.gz")
    with open(d["garbage"], "wb") as f:
        f.write(os.urandom(3000))
    d["truncated_run"] = os.path.join(tmp, "truncated_run")
    os.makedirs(d["truncated_run"])
    with open(os.path.join(run, "latest.pdstate"), "rb") as f:
        data = f.read()
    with open(os.path.join(d["truncated_run"], "latest.pdstate"), "wb") as f:
        f.write(data[: len(data) // 2])
    d["truncated_weights"] = os.path.join(tmp, "truncated.pdparams")
    with open(os.path.join(run, "best_model.pdparams"), "rb") as f:
        data = f.read()
    with open(d["truncated_weights"], "wb") as f:
        f.write(data[: len(data) // 3])
    before = snapshot(out)
    cases = _cases(d)
    with ThreadPoolExecutor(max_workers=4) as pool:  # process start-up dominates: run a few at a time
        results = dict(zip([c[0] for c in cases], pool.map(lambda c: _run(c[1], c[2], c[3], tmp), cases)))
    after = snapshot(out)
    yield {"cases": {c[0]: c for c in cases}, "results": results, "before": before, "after": after}
    shutil.rmtree(tmp, ignore_errors=True)


CASE_IDS = [c[0] for c in _cases({"run": "r", "out": "o", "tmp": "t", "bad_yaml": "b", "garbage": "g",
                                  "truncated_run": "tr", "truncated_weights": "tw"})]


def test_the_table_is_large_enough():
    assert len(CASE_IDS) >= 12 and len(set(CASE_IDS)) == len(CASE_IDS)


@pytest.mark.parametrize("case", CASE_IDS)
def test_bad_input_exits_2_with_one_clear_message(prepared, case):
    _, tool, _, _, words = prepared["cases"][case]
    res = prepared["results"][case]
    assert res.returncode == 2, (res.returncode, res.stderr[-3000:])
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, res.stderr[-3000:]
    for word in words:
        assert word in errors[0], errors[0]


def test_existing_outputs_are_untouched(prepared):
    assert prepared["after"] == prepared["before"]
