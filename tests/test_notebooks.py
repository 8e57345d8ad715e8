"""Every notebook in notebooks/ runs top to bottom in smoke mode (PPVIT_SMOKE=1) and leaves the figures it
promises: the learning curves, the prediction grid and the LIME explanations of each run it trains."""
import json
import os
import sys

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from ppvit.data import build_transform
from ppvit.engine import load_config
from ppvit.utils.notebook import NotebookRun, lime_normalization
from ppvit.utils.quiet import PADDLE_IMPORT_NOTICES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, "notebooks")
# notebook -> the run folders (config names) it trains
RUNS = {
    "conv2former.ipynb": ["conv2former_n_cifar"],
    "convit.ipynb": ["convit_small"],
    "coatnet_convmixer.ipynb": ["coatnet_0", "convmixer_256_8"],
    "dilateformer.ipynb": ["dilateformer_t"],
}
FIGURES = ["loss_curve.png", "acc_curve.png", "confusion_matrix.png", "predictions.png", "lime_3.png",
           "lime_13.png"]


def _read(name):
    with open(os.path.join(NOTEBOOKS, name), encoding="utf-8") as f:
        return nbformat.read(f, as_version=4)


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A kernelspec for this very interpreter (the venv running pytest), found through JUPYTER_PATH, so the
    notebooks never run in whatever "python3" a machine happens to have registered."""
    folder = tmp_path_factory.mktemp("jupyter")
    spec_dir = folder / "kernels" / "ppvit-test"
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "ppvit test", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = os.pathsep.join([str(folder)] + ([old] if old else []))
    yield "ppvit-test"
    if old is None:
        del os.environ["JUPYTER_PATH"]
    else:
        os.environ["JUPYTER_PATH"] = old


def test_every_notebook_is_covered_and_committed_without_outputs():
    found = sorted(f for f in os.listdir(NOTEBOOKS) if f.endswith(".ipynb"))
    assert found == sorted(RUNS)
    for name in found:
        nb = _read(name)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear the outputs"


def test_real_mode_keeps_the_recipe_and_smoke_mode_shrinks_it(tmp_path):
    real = NotebookRun.from_env({"PPVIT_DATA_FILE": "/data/cifar-10-python.tar.gz"})
    smoke = NotebookRun.from_env({"PPVIT_SMOKE": "1", "PPVIT_OUTPUT_DIR": str(tmp_path)})
    assert not real.smoke and smoke.smoke and smoke.lime_samples < real.lime_samples
    for run in sorted({r for runs in RUNS.values() for r in runs}):
        path = os.path.join(ROOT, "configs", f"{run}.yaml")
        recipe = load_config(path)
        cfg = load_config(path, real.overrides(path))
        assert cfg["Data"]["data_file"] == "/data/cifar-10-python.tar.gz"
        assert cfg["Global"]["output_dir"] == os.path.join(ROOT, "output")
        for section in ("Arch", "Optimizer", "Loss"):
            assert cfg[section] == recipe[section]
        assert (cfg["Global"]["epochs"], cfg["Arch"]["img_size"]) == (recipe["Global"]["epochs"],
                                                                     recipe["Arch"]["img_size"])
        assert load_config(path, real.overrides(path, epochs=3))["Global"]["epochs"] == 3

        cfg = load_config(path, smoke.overrides(path, epochs=3))
        assert cfg["Global"]["epochs"] == 1 and cfg["Data"]["dataset"] == "digits"
        assert cfg["Global"]["output_dir"] == str(tmp_path)
        # one key: the model is built for the smaller input and the data pipeline resizes to it
        assert cfg["Arch"]["img_size"] == smoke.image_size(path) <= 64


@pytest.mark.parametrize("transform", ["convit", "dilateformer", "conv2former_cifar"])
def test_lime_normalization_reproduces_the_test_transform(transform):
    """LIME feeds 0..255 images through (x / 255 - mean) / std: that must equal the pipeline's own test
    transform, including notebook 002's normalisation of 0..255 pixels."""
    image = np.random.RandomState(0).randint(0, 256, (32, 32, 3)).astype(np.uint8)
    expected = np.asarray(build_transform(transform, "test", 32)(image))
    mean, std = lime_normalization(transform)
    got = ((image / 255.0 - np.array(mean)) / np.array(std)).transpose(2, 0, 1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("name", sorted(RUNS))
def test_notebook_runs_in_smoke_mode(name, kernel_name, tmp_path, monkeypatch):
    out = tmp_path / "output"
    monkeypatch.setenv("PPVIT_SMOKE", "1")
    monkeypatch.setenv("PPVIT_OUTPUT_DIR", str(out))
    nb = _read(name)
    client = NotebookClient(nb, kernel_name=kernel_name, timeout=600, allow_errors=False,
                            resources={"metadata": {"path": NOTEBOOKS}})
    client.execute()  # raises CellExecutionError naming the failing cell

    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")  # stdout and stderr
    assert "SMOKE run" in text  # the helper saw the switch: digits, 1 epoch, small images
    # the first cell imports Paddle quietly, as the tools do (no ccache hint, no OpenBLAS caution)
    assert not [n for n in PADDLE_IMPORT_NOTICES[:3] if n in text], text[:2000]
    images = sum("image/png" in o.get("data", {}) for o in outputs)
    assert images >= len(FIGURES) * len(RUNS[name]), "the figures are shown in the notebook"
    for run in RUNS[name]:
        folder = out / run
        for figure in FIGURES:
            assert (folder / figure).stat().st_size > 1000, f"{run}/{figure}"
        history = json.loads((folder / "history.json").read_text())
        assert history["epochs"]["epoch"] == [1]  # smoke: one epoch on the digits data
        assert (folder / "best_model.pdparams").is_file()
