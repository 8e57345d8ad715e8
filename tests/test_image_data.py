"""Your own images (Data.dataset folder / filelist), the offline photo demo, and VisualDL logging.

Tiny runs: a few 16x16 crops of scikit-image's sample photos, a one-block ConvMixer, one epoch.
"""
import json
import os
import sys

import numpy as np
import pytest

from ppvit.data import DataError, build_dataset, dataset_class_names
from ppvit.data.demo import write_photo_demo
from ppvit.engine import Engine, load_config
from ppvit.commands.cli import tool_main as cli_main
from ppvit.commands.evaluate import evaluate
from ppvit.engine.config import ConfigError

DEMO_CLASSES = ["astronaut", "cat", "coffee", "rocket"]


def tiny_cfg(tmp_path, data, **global_keys):
    return {
        "Global": dict({"device": "cpu", "seed": 0, "epochs": 1, "output_dir": str(tmp_path / "output"),
                        "run_name": "run"}, **global_keys),
        "Arch": {"name": "convmixer_256_8", "num_classes": 4, "dim": 16, "depth": 1},
        "Optimizer": {"name": "AdamW", "lr": 0.01},
        "Data": dict({"transform": "basic", "batch_size": 4, "eval_batch_size": 8}, **data),
    }


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    return write_photo_demo(root, train_per_class=3, val_per_class=2, size=16)


def train_and_eval(cfg_dict):
    cfg = load_config(base=cfg_dict)
    engine = Engine(cfg)
    engine.train()
    evaluate(cfg=load_config(base=cfg_dict))
    with open(os.path.join(engine.run_dir, "eval.json")) as f:
        return engine, json.load(f)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


# ---------------------------------------------------------------------------------------------- demo
def test_demo_writes_a_class_tree_and_matching_file_lists(demo, tmp_path):
    root = demo["root"]
    for split, n in (("train", 3), ("val", 2)):
        assert sorted(os.listdir(os.path.join(root, split))) == DEMO_CLASSES
        lines = open(demo[f"{split}_list"]).read().split("\n")[:-1]
        assert len(lines) == 4 * n
        for line in lines:
            path, label = line.rsplit(" ", 1)
            assert path.split("/")[1] == DEMO_CLASSES[int(label)]
            assert os.path.isfile(os.path.join(root, path))
    assert open(demo["class_id_map_file"]).read().split("\n")[:-1] == [f"{i} {c}" for i, c in enumerate(DEMO_CLASSES)]
    # a folder of other files is never written into
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(DataError, match="not a ppvit demo"):
        write_photo_demo(tmp_path / "mine")
    assert os.listdir(tmp_path / "mine") == ["notes.txt"]


def test_the_demo_and_ppvit_data_import_no_paddle(tmp_path):
    """`python -m ppvit.data.demo` needs no Paddle (so none of its import notices), and ppvit.data loads a
    module only when one of its names is used."""
    import subprocess

    from tests.conftest import ROOT

    code = ("import sys, ppvit.data; assert 'paddle' not in sys.modules; "
            "from ppvit.data.demo import main; main([sys.argv[1]]); assert 'paddle' not in sys.modules, 'paddle'; "
            "ppvit.data.build_dataset; assert 'paddle' in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "photos")], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "photos" / "train")) == ["astronaut", "cat", "coffee", "rocket"]


# ---------------------------------------------------------------------------------------------- folder
def test_train_and_eval_from_a_folder_tree(demo, tmp_path):
    data = {"dataset": "folder", "train_dir": demo["train_dir"], "val_dir": demo["val_dir"]}
    engine, ev = train_and_eval(tiny_cfg(tmp_path, data))
    assert len(engine.train_set) == 12 and len(engine.eval_set) == 8
    assert engine.class_names == DEMO_CLASSES
    assert ev["class_names"] == DEMO_CLASSES and ev["count"] == 8
    # rows of the confusion matrix are the true classes: two val images each
    assert np.asarray(ev["confusion"]).sum(axis=1).tolist() == [2, 2, 2, 2]
    run = tmp_path / "output" / "run"
    for name in ("best_model.pdparams", "history.json", "confusion_matrix.png", "train.log"):
        assert (run / name).is_file(), name
    image, label = engine.eval_set[0]
    assert image.shape == (3, 32, 32) and image.dtype == np.float32 and int(label) == 0


def test_infer_and_export_use_the_folder_names(demo, tmp_path):
    from ppvit.commands import export, infer

    data = {"dataset": "folder", "train_dir": demo["train_dir"], "val_dir": demo["val_dir"]}
    cfg_dict = tiny_cfg(tmp_path, data)
    Engine(load_config(base=cfg_dict)).train()
    cfg = load_config(base=cfg_dict)
    cfg["Export"]["onnx"] = False
    info = export.run(cfg)
    meta = json.load(open(info["prefix"] + ".meta.json"))
    assert meta["labels"] == DEMO_CLASSES
    cfg = load_config(base=dict(cfg_dict, Infer={"images": os.path.join(demo["val_dir"], "cat"), "grid_images": 0}))
    results = infer.run(cfg)
    assert len(results) == 2
    for r in results:
        assert [t["label"] for t in r["topk"]] == [DEMO_CLASSES[t["class_id"]] for t in r["topk"]]
    saved = json.load(open(tmp_path / "output" / "run" / "infer.json"))
    assert saved["results"][0]["topk"][0]["label"] in DEMO_CLASSES


def test_val_split_holds_out_a_seeded_stratified_fraction(demo):
    data = {"dataset": "folder", "train_dir": demo["train_dir"], "val_split": 0.34, "split_seed": 1,
            "transform": "basic"}
    train = build_dataset(data, "train").samples
    val = build_dataset(data, "test").samples
    assert len(train) == 8 and len(val) == 4  # one of the three images of each class
    assert sorted(label for _, label in val) == [0, 1, 2, 3]
    assert not {p for p, _ in train} & {p for p, _ in val}
    assert build_dataset(data, "test").samples == val  # the same seed, the same split
    others = [build_dataset(dict(data, split_seed=s), "test").samples for s in range(2, 8)]
    assert any(o != val for o in others)
    with pytest.raises(DataError, match="val_dir and Data.val_split are both set"):
        build_dataset(dict(data, val_dir=demo["val_dir"]), "test")
    with pytest.raises(DataError, match="needs validation images"):
        build_dataset(dict(data, val_split=None), "test")


# ---------------------------------------------------------------------------------------------- file list
def test_file_list_names_come_from_the_label_file_not_the_folder_order(demo, tmp_path):
    """Labels 0='zebra', 1='apple': the image folders sort the other way (apple/ before zebra/)."""
    root = tmp_path / "lists"
    src = demo["root"]
    lines = {"train": [], "val": []}
    # zebra = rocket photos (3 val images), apple = cat photos (1 val image): unequal rows tell them apart
    for split, folder, label, n in (("train", "rocket", 0, 3), ("train", "cat", 1, 3),
                                    ("val", "rocket", 0, 2), ("val", "cat", 1, 1)):
        name = "zebra" if label == 0 else "apple"
        for i in range(n):
            dst = root / "images" / name / f"{split}_{i}.png"
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(open(os.path.join(src, split, folder, f"{folder}_{i:03d}.png"), "rb").read())
            # relative to the list's folder, and one absolute path
            lines[split].append(f"{dst if (split, i) == ('val', 0) else dst.relative_to(root)} {label}")
    extra = root / "images" / "zebra" / "val_extra.png"
    extra.write_bytes(open(os.path.join(src, "val", "rocket", "rocket_001.png"), "rb").read())
    lines["val"].append("images/zebra/val_extra.png 0")
    write(str(root / "train.txt"), "\n".join(lines["train"]) + "\n")
    write(str(root / "val.txt"), "\n".join(lines["val"]) + "\n")
    write(str(root / "labels.txt"), "0 zebra\n1 apple\n")
    data = {"dataset": "filelist", "train_list": str(root / "train.txt"), "val_list": str(root / "val.txt"),
            "class_id_map_file": str(root / "labels.txt")}
    cfg = tiny_cfg(tmp_path, data)
    cfg["Arch"]["num_classes"] = 2
    assert dataset_class_names(load_config(base=cfg)["Data"]) == ["zebra", "apple"]
    engine, ev = train_and_eval(cfg)
    assert engine.class_names == ["zebra", "apple"]
    assert ev["class_names"] == ["zebra", "apple"]
    rows = np.asarray(ev["confusion"]).sum(axis=1).tolist()
    assert rows == [3, 1]  # row 'zebra' holds the three zebra-labelled images
    from ppvit.commands.common import class_names

    assert class_names(load_config(base=cfg)) == ["zebra", "apple"]  # what export writes as labels
    # without a label file the names are the ids
    data_no_names = dict(data, class_id_map_file=None)
    assert dataset_class_names(load_config(base=tiny_cfg(tmp_path, data_no_names))["Data"]) == ["0", "1"]


def test_file_list_mistakes_name_the_line(demo, tmp_path):
    good = demo["train_list"]
    write(str(tmp_path / "bad.txt"), "a.png 0\nb.png cat\n")
    base = {"dataset": "filelist", "train_list": good, "val_list": str(tmp_path / "bad.txt"), "transform": "basic"}
    with pytest.raises(DataError, match=r"bad.txt line 2: expected 'image_path label'"):
        build_dataset(base, "test")
    write(str(tmp_path / "labels.txt"), "0 astronaut\n1 cat\n")
    with pytest.raises(DataError, match=r"label ids \[2, 3\] have no name"):
        build_dataset(dict(base, val_list=demo["val_list"], class_id_map_file=str(tmp_path / "labels.txt")), "test")
    write(str(tmp_path / "gaps.txt"), "0 a\n2 c\n")
    with pytest.raises(DataError, match="without gaps"):
        build_dataset(dict(base, class_id_map_file=str(tmp_path / "gaps.txt")), "test")


def test_a_missing_listed_file_is_named(demo, tmp_path):
    lines = open(demo["val_list"]).read() + "gone/nowhere.png 1\n"
    write(str(tmp_path / "val.txt"), lines.replace("val/", os.path.join(demo["root"], "val") + "/"))
    data = {"dataset": "filelist", "train_list": demo["train_list"], "val_list": str(tmp_path / "val.txt"),
            "transform": "basic"}
    with pytest.raises(DataError, match=r"Data.val_list: 1 of 9 images cannot be read: .*gone/nowhere.png "
                                        r"\(no such file\)"):
        build_dataset(data, "test")
    assert len(build_dataset(dict(data, skip_bad_images=True), "test")) == 8


@pytest.mark.parametrize("transform", ["basic", "convit"])  # a cv2 (ndarray) and a PIL pipeline
def test_images_go_through_the_same_transforms_as_cifar(demo, transform):
    """A sample is the pipeline applied to the file's RGB pixels, as Cifar10 applies it to its arrays."""
    import cv2
    from PIL import Image

    from ppvit.data import build_transform
    from ppvit.data.transforms import get_pipeline

    data = {"dataset": "folder", "train_dir": demo["train_dir"], "val_dir": demo["val_dir"], "transform": transform}
    ds = build_dataset(data, "test", 32)
    path, label = ds.samples[5]
    rgb = cv2.imread(path)[:, :, ::-1].copy()
    if get_pipeline(transform).backend == "pil":
        rgb = Image.fromarray(rgb)
    expected = np.asarray(build_transform(transform, "test", 32)(rgb), np.float32)
    image, got_label = ds[5]
    np.testing.assert_array_equal(image, expected)
    assert int(got_label) == label == 2  # the third class folder (coffee), sorted


# ---------------------------------------------------------------------------------------------- bad images
@pytest.fixture
def tree_with_a_broken_image(demo, tmp_path):
    import shutil

    root = tmp_path / "tree"
    shutil.copytree(demo["root"], root)
    (root / "val" / "cat" / "broken.png").write_bytes(b"this is not a PNG")
    return root


def test_an_unreadable_image_is_named_and_can_be_skipped(tree_with_a_broken_image, tmp_path, capsys):
    root = tree_with_a_broken_image
    cfg_path = tmp_path / "mine.yaml"
    import yaml

    cfg = tiny_cfg(tmp_path, {"dataset": "folder", "train_dir": str(root / "train"), "val_dir": str(root / "val")})
    cfg["Global"].pop("run_name")
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert cli_main("train", ["-c", str(cfg_path)]) == 2
    err = capsys.readouterr().err
    assert "broken.png (not an image" in err and "Data.skip_bad_images=true" in err and "Data.val_dir" in err
    assert not (tmp_path / "output" / "mine").exists()  # nothing written

    assert cli_main("train", ["-c", str(cfg_path), "-o", "Data.skip_bad_images=true"]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 of 9 images" in captured.out
    log = open(tmp_path / "output" / "mine" / "train.log").read()
    assert "test: skipped 1 unreadable images" in log and "broken.png" in log
    assert "8 test images" in log


# ---------------------------------------------------------------------------------------------- VisualDL
def test_visualdl_scalars_per_step_and_epoch(demo, tmp_path):
    pytest.importorskip("visualdl", reason="visualdl is not installed (optional: pip install visualdl==2.5.3)")
    from visualdl import LogReader

    data = {"dataset": "folder", "train_dir": demo["train_dir"], "val_dir": demo["val_dir"]}
    cfg = tiny_cfg(tmp_path, data, use_visualdl=True, epochs=2)
    engine = Engine(load_config(base=cfg))
    history = engine.train()
    vdl = tmp_path / "output" / "run" / "vdl"
    files = sorted(vdl.iterdir())
    assert len(files) == 1
    reader = LogReader(file_path=str(files[0]))
    tags = set(reader.get_tags()["scalar"])
    assert {"train/loss", "train/lr", "epoch/train_loss", "epoch/val_top1", "epoch/val_loss"} <= tags
    loss = reader.get_data("scalar", "train/loss")
    assert [r.id for r in loss] == history["steps"]["step"] == list(range(1, 7))
    np.testing.assert_allclose([r.value for r in loss], history["steps"]["loss"], rtol=1e-6)
    top1 = reader.get_data("scalar", "epoch/val_top1")
    assert [r.id for r in top1] == [1, 2]
    np.testing.assert_allclose([r.value for r in top1], [100 * v for v in history["epochs"]["val_top1"]], rtol=1e-6)


def test_visualdl_missing_is_one_clear_error(demo, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "visualdl", None)  # `import visualdl` fails
    data = {"dataset": "folder", "train_dir": demo["train_dir"], "val_dir": demo["val_dir"]}
    with pytest.raises(ConfigError, match="pip install visualdl"):
        Engine(load_config(base=tiny_cfg(tmp_path, data, use_visualdl=True)))
    assert not (tmp_path / "output").exists()
