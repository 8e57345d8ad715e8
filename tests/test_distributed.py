"""The same tools/train.py under ``paddle.distributed.launch --nproc_per_node 2`` on the CPU (gloo), with a
BatchNorm model: the ranks must end with one state (weights and running statistics), and the validation a run
logs must be what tools/eval.py gets from its saved weights."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from ppvit.io import load_state

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {
    "Global": {"device": "cpu", "seed": 3, "epochs": 2, "run_name": "tiny"},
    # ConvMixer: a BatchNorm after every conv, so each rank's running statistics follow its own batches
    "Arch": {"name": "convmixer_256_8", "num_classes": 10, "dim": 16, "depth": 2, "drop_path_rate": 0.1,
             "img_size": 16},
    "Loss": {"name": "LabelSmoothingCrossEntropy", "smoothing": 0.1},
    "Optimizer": {"name": "AdamW", "lr": 0.01, "weight_decay": 0.01},
    # 70 test images: an odd share per rank (35 + 35) and a last eval batch smaller than the others
    "Data": {"dataset": "digits", "transform": "basic", "limit": 70,
             "batch_size": 8, "eval_batch_size": 16, "num_workers": 0, "mixup_alpha": 0.2},
}


def test_two_cpu_processes_train_in_step(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out, digests = tmp_path / "out", tmp_path / "digests"
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
           str(tmp_path / "launch_log"), os.path.join(ROOT, "tools", "train.py"), "-c", str(config),
           "-o", f"Global.output_dir={out}"]
    # PPVIT_RANK_DIGEST_DIR: a test hook; each rank writes the SHA-256 of its final weights there
    env = dict(os.environ, PPVIT_RANK_DIGEST_DIR=str(digests))
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=400, cwd=tmp_path, env=env)
    logs = "".join((tmp_path / "launch_log" / f).read_text() for f in os.listdir(tmp_path / "launch_log")
                   if f.startswith("workerlog"))
    assert res.returncode == 0, (res.stdout + res.stderr)[-3000:] + logs[-3000:]

    ranks = [json.loads((digests / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 2 * 4  # 70 images / (2 x 8), drop_last
    assert ranks[0]["sha256"] == ranks[1]["sha256"], "the two ranks ended with different weights"

    # only rank 0 wrote the run folder, once
    run = out / "tiny"
    log = (run / "train.log").read_text()
    assert log.count("epoch 2/2 | train loss") == 1 and "device cpu x2" in log
    history = json.loads((run / "history.json").read_text())
    weights = load_state(run / "final_model.pdparams")
    assert any(k.endswith("_mean") for k in weights) and any(k.endswith("_variance") for k in weights)
    assert ranks[0]["tensors"] == len(weights)  # the digests cover every tensor, running statistics included
    # the logged validation (reduced over both ranks' halves) is what tools/eval.py gets from the saved weights
    res = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "eval.py"), "-c", str(config), "-o",
                          f"Global.output_dir={out}", "-o", f"Global.pretrained_model={run / 'final_model.pdparams'}"],
                         capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-3000:]
    single = json.loads((run / "eval.json").read_text())
    assert single["count"] == 70
    assert history["epochs"]["val_top1"][-1] == pytest.approx(single["top1"], abs=1e-9)
    assert abs(history["epochs"]["val_loss"][-1] - single["loss"]) <= 1e-5, (history["epochs"]["val_loss"], single)
