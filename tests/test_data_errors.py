"""An image that cannot be loaded mid-run (damaged after its header, deleted, a bug in a transform) stops the
run with one line and exit 2 in every worker mode and on every rank of a 2-process launch, or is skipped and
counted with Data.skip_bad_images; never a hang (every run here has a timeout)."""
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from ppvit.data.demo import write_photo_demo
from tests.runs import ROOT, tool

TIMEOUT = 180  # a hang fails the test instead of stalling CI


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photo_demo(tmp_path_factory.mktemp("photos"), train_per_class=3, val_per_class=2, size=16)


def damage(path):
    """Cut a PNG short after its header: the up-front check (the header) passes, decoding fails."""
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 3])


@pytest.fixture
def tree(photos, tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(photos["root"], root)
    return root


def config(tmp_path, root, **data):
    cfg = {"Global": {"device": "cpu", "seed": 0, "epochs": 1, "output_dir": str(tmp_path / "out"),
                      "run_name": "run"},
           "Arch": {"name": "convmixer_256_8", "num_classes": 4, "dim": 16, "depth": 1},
           "Optimizer": {"name": "AdamW", "lr": 0.01},
           # 12 train images in one batch: every one is read in the first step
           "Data": dict({"dataset": "folder", "train_dir": str(root / "train"), "val_dir": str(root / "val"),
                         "transform": "basic", "batch_size": 12, "eval_batch_size": 8}, **data)}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def one_error_line(proc, *needles):
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.replace("\r", "\n").splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_damaged_training_image_stops_with_one_line(tree, tmp_path, workers):
    damage(tree / "train" / "cat" / "cat_001.png")
    proc = tool("train.py", config(tmp_path, tree), [f"Data.num_workers={workers}"], timeout=TIMEOUT)
    one_error_line(proc, "cat_001.png", "damaged", "Data.skip_bad_images=true")


def test_damaged_images_are_skipped_and_counted_or_stop_eval(tree, tmp_path):
    damage(tree / "train" / "cat" / "cat_001.png")
    damage(tree / "val" / "rocket" / "rocket_000.png")
    cfg = config(tmp_path, tree, skip_bad_images=True)
    proc = tool("train.py", cfg, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = (tmp_path / "out" / "run" / "train.log").read_text()
    assert "skipped an unreadable image (Data.skip_bad_images; 1 so far)" in log and "cat_001.png" in log
    assert "rocket_000.png" in log
    # eval: the damaged test image stops it (nothing written), or is left out of the metrics (7 of 8 counted)
    proc = tool("eval.py", cfg, ["Data.skip_bad_images=false", "Data.num_workers=2"], timeout=TIMEOUT)
    one_error_line(proc, "rocket_000.png", "damaged")
    assert not (tmp_path / "out" / "run" / "eval.json").exists()
    proc = tool("eval.py", cfg, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "out" / "run" / "eval.json").read_text())["count"] == 7
    assert (tmp_path / "out" / "run" / "predictions.png").is_file()  # its grid passes over the image too


LOADER_SCRIPT = """
import os, sys
import numpy as np
import paddle
from ppvit.data import DataError
from ppvit.data.folder import ImageFileDataset
from ppvit.data.loader import safe_loader

samples = [(os.path.join(sys.argv[1], f), 0) for f in sorted(os.listdir(sys.argv[1]))]
workers = int(sys.argv[2])

def run(dataset):
    loader = safe_loader(dataset, paddle.io.BatchSampler(dataset, batch_size=2), workers, train=True)
    for images, labels in loader:
        pass

os.remove(samples[1][0])
try:  # a deleted image: one DataError
    run(ImageFileDataset(samples, ["a"], lambda image: image.astype("float32").transpose(2, 0, 1)))
except DataError as e:
    print("DataError:", e)

def buggy(image):
    return 1 / 0

run(ImageFileDataset(samples[2:], ["a"], buggy))  # a bug: its traceback
"""


@pytest.mark.parametrize("workers", [0])  # the mode that hung; worker processes take the same path (above)
def test_a_deleted_image_or_a_bug_in_a_transform_never_hangs(photos, tmp_path, workers):
    folder = tmp_path / "images"
    shutil.copytree(os.path.join(photos["root"], "train", "cat"), folder)
    proc = subprocess.run([sys.executable, "-c", LOADER_SCRIPT, str(folder), str(workers)],
                          capture_output=True, text=True, timeout=TIMEOUT, env=dict(os.environ, PYTHONPATH=ROOT))
    assert "DataError:" in proc.stdout and "cat_001.png" in proc.stdout and "deleted or moved" in proc.stdout
    # a bug keeps its traceback, the transform's frame included
    assert proc.returncode == 1 and "ZeroDivisionError" in proc.stderr and "in buggy" in proc.stderr, \
        proc.stderr[-3000:]


@pytest.mark.parametrize("split", ["train", "val"])
def test_every_rank_of_a_launch_stops_with_the_same_line(tree, tmp_path, split):
    """Training ranks agree after every step, evaluation ranks (whose shards differ) at the end of the pass."""
    damage(tree / "train" / "cat" / "cat_001.png" if split == "train" else tree / "val" / "rocket" / "rocket_001.png")
    cfg = config(tmp_path, tree, batch_size=6, eval_batch_size=1)
    logs = tmp_path / "launch_log"
    proc = subprocess.run([sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
                           str(logs), os.path.join(ROOT, "tools", "train.py"), "-c", str(cfg)],
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=tmp_path,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    line = sorted({x for x in out.splitlines() if x.startswith("error:")})  # the launcher may repeat rank 1's
    assert len(line) == 1 and ("cat_001.png" if split == "train" else "rocket_001.png") in line[0], out[-3000:]
    for r in (0, 1):
        worker = (logs / f"workerlog.{r}").read_text()
        assert line[0] in worker and "Traceback" not in worker, worker[-3000:]
        # Paddle's C++ INFO lines (tcp_store, tcp_utils) and its FLAGS block are not shown
        assert not re.search(r"^I\d{4} ", worker, re.M) and "Modified FLAGS" not in worker, worker[-3000:]
