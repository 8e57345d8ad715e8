"""The papers' recipes (configs/imagenet/*.yaml) and the completed CIFAR-10 recipes train one epoch with their
augmentations on: ImageNet-style class folders replaced by the offline photo demo, at 64 px, a few images."""
import glob
import os

import numpy as np
import pytest
import yaml

from ppvit.data.demo import write_photo_demo
from ppvit.engine import Engine, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGENET = sorted(glob.glob(os.path.join(ROOT, "configs", "imagenet", "*.yaml")))
# (configs/convmixer_256_8.yaml trains in tests/test_train.py's notebook-config smoke run)
CIFAR = [os.path.join(ROOT, "configs", "conv2former_n_cifar_recipe.yaml")]
# narrower and shallower models (the recipe's data, loss and optimiser unchanged): seconds on a CPU
SMALLER = {
    "convmixer_1536_20": ["Arch.dim=32", "Arch.depth=2"],
    "convit_tiny": ["Arch.depth=2"],
    "conv2former_t": ["Arch.depths=[1,1,1,1]", "Arch.dims=[16,32,64,128]", "Arch.head_dim=64"],
    "conv2former_n_cifar_recipe": ["Arch.depths=[1,1,1,1]", "Arch.dims=[16,32,64,128]"],
    "coatnet_0": ["Arch.num_blocks=[1,1,1,1,1]", "Arch.channels=[16,16,32,32,64]"],
    "dilateformer_t": ["Arch.depths=[1,1,1,1]", "Arch.embed_dim=24", "Arch.num_heads=[3,3,3,3]"],
}
FAMILIES = {"convit", "dilateformer", "conv2former", "coatnet", "convmixer"}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    write_photo_demo(str(root), train_per_class=1, val_per_class=1, size=72)
    return root


def test_one_recipe_per_family_each_value_sourced():
    names = [os.path.basename(p)[:-5] for p in IMAGENET]
    assert {n.split("_")[0] for n in names} >= FAMILIES, names
    for path in IMAGENET:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
        cfg = yaml.safe_load("\n".join(lines))
        assert cfg["Data"]["dataset"] == "folder" and cfg["Arch"]["num_classes"] == 1000
        for key in ("lr", "weight_decay"):  # the numbers that decide a recipe say where they come from
            line = next(l for l in lines if l.strip().startswith(f"{key}:"))
            assert "# [" in line, (path, line)


def _train(path, overrides, tmp_path):
    name = os.path.basename(path)[:-5]
    cfg = load_config(path, overrides + SMALLER.get(name, []) + [
        f"Global.output_dir={tmp_path}", "Global.epochs=1", "Global.device=cpu", "Global.use_amp=false",
        "Data.batch_size=2", "Data.eval_batch_size=4", "Data.num_workers=0", "Data.limit=4"])
    engine = Engine(cfg)
    hist = engine.train()
    assert np.isfinite(hist["epochs"]["train_loss"][0]) and np.isfinite(hist["epochs"]["val_loss"][0])
    return engine


@pytest.mark.parametrize("path", IMAGENET, ids=[os.path.basename(p) for p in IMAGENET])
def test_imagenet_recipe_trains_at_64px(path, photos, tmp_path):
    engine = _train(path, [f"Data.train_dir={photos / 'train'}", f"Data.val_dir={photos / 'val'}",
                           "Arch.num_classes=4", "Arch.img_size=64"], tmp_path)
    x = engine.train_loader.dataset[0][0]
    assert x.shape == (3, 64, 64)  # every op took its size from Arch.img_size
    assert engine.mixer is not None or engine.cfg["Data"]["mixup_alpha"] == engine.cfg["Data"]["cutmix_alpha"] == 0


@pytest.mark.parametrize("path", CIFAR, ids=[os.path.basename(p) for p in CIFAR])
def test_cifar_recipe_trains(path, tmp_path):
    _train(path, ["Data.dataset=digits"], tmp_path)
