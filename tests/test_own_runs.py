"""Your own runs: any zoo family trains on your folders from a per-family template, and eval (export, infer,
explain) takes the finished run folder as its config, so the run's overrides are never repeated; weights given
with a config that does not fit them point there."""
import json
import os

import pytest

from ppvit.commands.cli import main
from ppvit.data.demo import write_photo_demo

from runs import ROOT


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """ConViT-Tiny (not the quick start's ConvMixer) from configs/folder_convit.yaml on the photo demo, with the
    overrides a user would give: their folders, a smaller input, one epoch."""
    tmp = tmp_path_factory.mktemp("own")
    demo = write_photo_demo(tmp / "photos", train_per_class=2, val_per_class=1, size=16)
    overrides = [f"Data.train_dir={demo['train_dir']}", f"Data.val_dir={demo['val_dir']}", "Arch.img_size=32",
                 "Global.epochs=1", "Data.batch_size=4", f"Global.output_dir={tmp / 'output'}", "Global.device=cpu"]
    argv = ["train", "-c", os.path.join(ROOT, "configs", "folder_convit.yaml")]
    for o in overrides:
        argv += ["-o", o]
    assert main(argv) == 0
    return {"run": tmp / "output" / "folder_convit", "tmp": tmp, "overrides": overrides}


def test_a_family_template_trains_on_your_folders(trained):
    run = trained["run"]
    history = json.loads((run / "history.json").read_text())
    assert history["epochs"]["epoch"] == [1]
    saved = (run / "config.yaml").read_text()
    assert "name: convit_tiny" in saved and "img_size: 32" in saved and f"-c {run}" in saved  # readable, says how


def test_eval_of_a_finished_run_needs_only_its_folder(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # anywhere: the run folder brings its own output folder and paths
    assert main(["eval", "-c", str(trained["run"]), "-o", "Eval.grid_images=0"]) == 0
    metrics = json.loads((trained["run"] / "eval.json").read_text())
    history = json.loads((trained["run"] / "history.json").read_text())
    assert metrics["top1"] == pytest.approx(history["epochs"]["val_top1"][0])
    # the run's config.yaml itself names the same run, wherever the command runs
    from ppvit.engine.config import load_config, run_dir

    assert run_dir(load_config(str(trained["run"] / "config.yaml"))) == str(trained["run"])


def test_weights_with_a_config_that_does_not_fit_point_to_the_run_folder(trained, capsys):
    """The template without the run's Arch.img_size=32 builds another ConViT (its position table is for 64 px)."""
    demo = trained["tmp"] / "photos"
    argv = ["eval", "-c", os.path.join(ROOT, "configs", "folder_convit.yaml"),
            "-o", f"Global.pretrained_model={trained['run'] / 'best_model.pdparams'}",
            "-o", f"Data.train_dir={demo / 'train'}", "-o", f"Data.val_dir={demo / 'val'}", "-o", "Global.device=cpu",
            "-o", f"Global.output_dir={trained['tmp'] / 'elsewhere'}"]  # nothing lands in the working folder
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and f"-c {trained['run']}" in lines[0], err[-2000:]


def test_a_run_folder_as_config_means_the_run_itself(tmp_path):
    """A fine-tuned run's config names the weights it started from and how it was launched; with the run folder
    as the config, eval must take the run's own weights (best_model), and train must neither resume nor replace
    it."""
    import yaml

    from ppvit.engine.config import load_config, run_dir
    from runs import TINY

    run = tmp_path / "elsewhere" / "ft"
    run.mkdir(parents=True)
    saved = dict(TINY, Global=dict(TINY["Global"], run_name="ft", output_dir="./output", overwrite=True,
                                   extend=True, checkpoints="output/ft", pretrained_model="pretrained/start.pdparams"))
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    cfg = load_config(str(run))
    assert run_dir(cfg) == str(run)
    g = cfg["Global"]
    assert (g["pretrained_model"], g["checkpoints"], g["overwrite"], g["extend"]) == (None, None, False, False)
