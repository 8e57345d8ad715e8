"""The settings shared by the notebooks in ``notebooks/``: the notebook's real recipe, or a smoke run.

    run = NotebookRun.from_env()
    cfg = load_config("../configs/dilateformer_t.yaml", run.overrides("../configs/dilateformer_t.yaml"))

Environment variables:

- ``PPVIT_SMOKE=1``: shrink the notebook to about a minute of CPU work, for tests and a first look: the embedded
  digits data, 32 images per split, 1 epoch, 64x64 inputs for the 224-pixel recipes (``Arch.img_size``:
  model and data together), CPU, LIME with 30 perturbed samples, outputs in a fresh temporary folder.
- ``PPVIT_DATA_FILE``: the CIFAR-10 archive (``cifar-10-python.tar.gz``) for real runs; unset, the config's
  ``Data.data_file`` (null: Paddle's cache path, downloaded when the network allows).
- ``PPVIT_OUTPUT_DIR``: where runs are written; unset, ``output/`` beside ``configs/`` (real runs) or a
  temporary folder (smoke runs).
"""
import os
import tempfile
from dataclasses import dataclass

import yaml

from ..data import mean_std
from ..models import get_model_cfg

__all__ = ["SMOKE_ENV", "DATA_ENV", "OUTPUT_ENV", "NotebookRun", "smoke_enabled", "lime_normalization"]

SMOKE_ENV, DATA_ENV, OUTPUT_ENV = "PPVIT_SMOKE", "PPVIT_DATA_FILE", "PPVIT_OUTPUT_DIR"
SMOKE_IMAGES = 32      # Data.limit: images per split (a 32x32 Conv2Former-N trains at ~2-4 images/s here)
SMOKE_IMAGE_SIZE = 64  # input size for recipes above it (224-pixel models take minutes per step on a CPU)


def smoke_enabled(environ=None):
    value = (os.environ if environ is None else environ).get(SMOKE_ENV, "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def lime_normalization(transform):
    """``(mean, std)`` for LIME's ``predict_fn`` (which divides 0..255 pixels by 255 first) that reproduce
    the normalisation of pipeline ``transform``; notebook 002's normalises 0..255 pixels directly."""
    stats = mean_std(transform)
    scale = stats.pixel_scale
    return tuple(m / scale for m in stats.mean), tuple(s / scale for s in stats.std)


def _read_yaml(path):
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def _recipe_size(cfg):
    """The input size a config trains at: ``Arch.img_size``, else its model's (``get_model_cfg``)."""
    arch = cfg.get("Arch") or {}
    return arch.get("img_size") or get_model_cfg(arch["name"]).input_size[1]


@dataclass
class NotebookRun:
    """What a notebook run does: ``smoke`` or the real recipe, and how much LIME work."""

    smoke: bool
    output_dir: str = None       # None: output/ beside the config's folder
    data_file: str = None        # None: the config's own
    lime_samples: int = 1000     # notebook 004 used 10000 on a GPU
    lime_batch_size: int = 50
    grid_images: int = 18        # notebook 004's prediction row
    explain_indices: tuple = (3, 13)  # the test images notebook 004 explained

    @classmethod
    def from_env(cls, environ=None):
        env = os.environ if environ is None else environ
        smoke = smoke_enabled(env)
        output_dir = env.get(OUTPUT_ENV) or (tempfile.mkdtemp(prefix="ppvit-notebook-") if smoke else None)
        if smoke:
            return cls(True, output_dir, None, lime_samples=30, lime_batch_size=30)
        return cls(False, output_dir, env.get(DATA_ENV) or None)

    def overrides(self, config_path, *extra, epochs=None):
        """``-o``-style overrides for ``load_config(config_path, ...)``, then ``extra`` (which win).

        ``epochs`` shortens a real run (a smoke run always trains one epoch)."""
        cfg = _read_yaml(config_path)
        out = [f"Global.output_dir={self.output_dir or self._default_output(config_path)}"]
        if self.smoke:
            out += ["Global.device=cpu", "Global.epochs=1", "Global.print_interval=1",
                    "Data.dataset=digits", "Data.data_file=null", f"Data.limit={SMOKE_IMAGES}",
                    "Data.num_workers=0"]
            if _recipe_size(cfg) > SMOKE_IMAGE_SIZE:
                out.append(f"Arch.img_size={SMOKE_IMAGE_SIZE}")  # the model and the data pipeline
        else:
            if self.data_file:
                out.append(f"Data.data_file={self.data_file}")
            if epochs is not None:
                out.append(f"Global.epochs={int(epochs)}")
        return out + list(extra)

    def image_size(self, config_path):
        """The input size a run of ``config_path`` uses in this mode (64 for 224-pixel recipes when smoke)."""
        size = _recipe_size(_read_yaml(config_path))
        return min(size, SMOKE_IMAGE_SIZE) if self.smoke else size

    @staticmethod
    def _default_output(config_path):
        return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(config_path))), "output")

    def __str__(self):
        mode = ("SMOKE run (PPVIT_SMOKE=1): digits data, 1 epoch, small images" if self.smoke
                else "real recipe (set PPVIT_SMOKE=1 for a seconds-long smoke run)")
        return f"{mode}; outputs under {self.output_dir or 'output/'}; LIME with {self.lime_samples} samples"
