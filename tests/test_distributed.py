"""The same tools/train.py under ``paddle.distributed.launch --nproc_per_node 2`` on the CPU (gloo)."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from ppvit.commands.evaluate import evaluate
from ppvit.engine import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {
    "Global": {"device": "cpu", "seed": 3, "epochs": 2, "run_name": "tiny"},
    "Arch": {"name": "conv2former_n_cifar", "num_classes": 10, "dims": [8, 16], "depths": [1, 1],
             "kernel_size": 3, "drop_path_rate": 0.1, "img_size": 16},
    "Loss": {"name": "LabelSmoothingCrossEntropy", "smoothing": 0.1},
    "Optimizer": {"name": "AdamW", "lr": 0.003, "weight_decay": 0.01},
    # 70 test images: an odd share per rank (35 + 35) and a last eval batch smaller than the others
    "Data": {"dataset": "digits", "transform": "conv2former_cifar", "limit": 70,
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
    # validation is reduced over both ranks' halves: it equals a single-process evaluation of the weights
    single = evaluate(cfg=load_config(str(config), [f"Global.output_dir={out}",
                                                     f"Global.pretrained_model={run / 'final_model.pdparams'}"]))
    assert single["count"] == 70
    assert history["epochs"]["val_top1"][-1] == pytest.approx(single["top1"])
    assert history["epochs"]["val_loss"][-1] == pytest.approx(single["loss"], rel=1e-4)
