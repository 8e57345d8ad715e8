"""Paths, file systems and text files as users have them: ``~`` and ``$VARS`` in every path key, symbolic links
(loops included), read-only / unwritable / full / blocked output folders (one line, exit 2, before any work),
UTF-8 with or without a byte-order mark, another encoding named; label ids from 0; the class and channel counts."""
import errno
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from ppvit.commands.cli import main as cli_main
from ppvit.data import DataError, dataset_class_names
from ppvit.data.demo import write_photo_demo
from ppvit.data.folder import split_samples
from ppvit.deploy import expand_image_paths
from ppvit.engine import Engine, load_config
from ppvit.engine.config import SCHEMA, ConfigError
from tests.runs import ROOT, TINY, one_error, write_config

DEMO_CLASSES = ["astronaut", "cat", "coffee", "rocket"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return write_photo_demo(tmp_path_factory.mktemp("photos"), train_per_class=3, val_per_class=2, size=16)


def folder_cfg(tmp_path, root, **arch):
    return {"Global": {"device": "cpu", "seed": 0, "epochs": 1, "output_dir": str(tmp_path / "out"), "run_name": "run"},
            "Arch": dict({"name": "convmixer_256_8", "num_classes": 4, "dim": 16, "depth": 1}, **arch),
            "Optimizer": {"name": "AdamW", "lr": 0.01},
            "Data": {"dataset": "folder", "train_dir": str(root / "train"), "val_dir": str(root / "val"),
                     "transform": "basic", "batch_size": 4, "eval_batch_size": 8}}


def error_line(capsys):
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# ---------------------------------------------------------------------------------------------- ~ and $VARS
PATH_KEYS = [(s, k) for s, keys in SCHEMA.items() for k, spec in keys.items() if spec.path]


def test_every_path_key_is_a_path_key():
    named = {"Global.output_dir", "Global.pretrained_model", "Global.checkpoints", "Data.data_file",
             "Data.train_dir", "Data.val_dir", "Data.train_list", "Data.val_list", "Data.class_id_map_file",
             "Eval.model", "Eval.output", "Export.output", "Infer.model", "Infer.images", "Infer.output",
             "Explain.images", "Explain.model", "Explain.output", "App.model", "App.images"}
    assert {f"{s}.{k}" for s, k in PATH_KEYS} == named


@pytest.mark.parametrize("section,key", PATH_KEYS)
def test_home_and_variables_are_expanded_in_every_path_key(section, key, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PPVIT_TEST_DATA", "/data/set")
    list_key = list in SCHEMA[section][key].types
    for raw, want in (("~/a/b", str(tmp_path / "home" / "a" / "b")), ("$PPVIT_TEST_DATA/x", "/data/set/x"),
                      ("${PPVIT_TEST_DATA}/y", "/data/set/y")):
        cfg = load_config(None, [f"{section}.{key}={raw}"], base=TINY)
        assert cfg[section][key] == want
        if list_key:
            cfg = load_config(None, [f"{section}.{key}=['{raw}', plain/z]"], base=TINY)
            assert cfg[section][key] == [want, "plain/z"]
    with pytest.raises(ConfigError, match=f"{section}.{key}='\\$PPVIT_UNSET_VAR/x': environment variable "
                                          "PPVIT_UNSET_VAR is not set"):
        load_config(None, [f"{section}.{key}=$PPVIT_UNSET_VAR/x"], base=TINY)


def test_a_run_under_home_trains_evaluates_and_resumes_there(monkeypatch, tmp_path):
    import matplotlib

    monkeypatch.setenv("MPLCONFIGDIR", matplotlib.get_cachedir())  # its font cache, not rebuilt for a new HOME
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "home").mkdir()
    config = write_config(tmp_path / "home")
    base = ["Global.output_dir=~/runs", "Global.epochs=1"]
    assert cli_main(["train", "-c", "~/tiny.yaml", "-o", base[0], "-o", base[1]]) == 0
    run = tmp_path / "home" / "runs" / "tiny"
    assert (run / "best_model.pdparams").is_file() and not (tmp_path / "~").exists()
    engine = Engine(load_config(config, base + ["Global.pretrained_model=~/runs/tiny/best_model.pdparams"]),
                    mode="eval")  # the weights load (no "weight file not found")
    assert engine.cfg["Global"]["pretrained_model"] == str(run / "best_model.pdparams")
    engine = Engine(load_config(config, ["Global.output_dir=/elsewhere", "Global.checkpoints=~/runs/tiny",
                                         "Global.epochs=2", "Global.extend=true"]))
    assert engine.resumed_from == str(run / "latest.pdstate") and engine.run_dir == str(run)


# ---------------------------------------------------------------------------------------------- symlinks
def test_symlinked_files_and_folders_are_followed_and_loops_walked_once(photos, tmp_path):
    root = tmp_path / "tree"
    shutil.copytree(photos["root"], root)
    extra = tmp_path / "elsewhere"
    (extra / "deeper").mkdir(parents=True)
    for i in range(2):
        shutil.copy(root / "val" / "cat" / f"cat_00{i}.png", extra / f"far_{i}.png")
    shutil.copy(root / "val" / "cat" / "cat_000.png", extra / "deeper" / "far_deep.png")
    cat = root / "train" / "cat"
    os.symlink(extra / "far_0.png", cat / "linked_file.png")  # a link to a file
    os.symlink(extra, cat / "linked_folder")  # a link to a folder (holding a subfolder)
    os.symlink(cat, cat / "loop")  # a loop back to the class folder
    os.symlink(extra, cat / "same_again")  # a second link to one folder: walked once
    os.symlink(root / "val" / "rocket", root / "train" / "zz_linked_class")  # a class folder that is a link

    cfg = folder_cfg(tmp_path, root)["Data"]
    names = dataset_class_names(cfg)
    assert names == DEMO_CLASSES + ["zz_linked_class"]
    samples, _, _ = split_samples(cfg, "train")
    cats = sorted(os.path.relpath(p, cat) for p, label in samples if label == 1)
    assert cats == ["cat_000.png", "cat_001.png", "cat_002.png", "linked_file.png", "linked_folder/deeper/far_deep.png",
                    "linked_folder/far_0.png", "linked_folder/far_1.png"]
    assert sum(label == 4 for _, label in samples) == 2  # the linked class folder's images
    # inference inputs follow the same rule
    found = expand_image_paths([str(cat)])
    assert sorted(os.path.relpath(p, cat) for p in found) == cats


# ---------------------------------------------------------------------------------------------- file systems
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fs")
    config = write_config(tmp)
    assert cli_main(["train", "-c", config, "-o", f"Global.output_dir={tmp / 'out'}", "-o", "Global.epochs=1"]) == 0
    return {"tmp": tmp, "config": config, "out": tmp / "out", "run": tmp / "out" / "tiny"}


def _can_bind_read_only():
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0


RO_SCRIPT = """
import sys
from ppvit.commands.cli import main
config, out = sys.argv[1], sys.argv[2]
for verb, extra in (("train", ["Global.overwrite=true"]), ("train", ["Global.run_name=new"]), ("eval", []),
                    ("export", []), ("infer", [f"Infer.images={sys.argv[3]}"]), ("explain", ["Explain.num_samples=8"])):
    args = [verb, "-c", config, "-o", f"Global.output_dir={out}"]
    for o in extra:
        args += ["-o", o]
    print(f"{verb} exit {main(args)}", flush=True)
"""


@pytest.mark.skipif(not _can_bind_read_only(), reason="needs root and unshare -m for a read-only bind mount")
def test_a_read_only_output_folder_is_one_line_before_any_work(trained, photos):
    """The run folder on a read-only file system (a bind mount in a private mount namespace): every verb stops
    at once with one line naming the folder and the setting to change; eval prints no metrics first."""
    out = trained["out"]
    script = (f"mount --bind {out} {out} && mount -o remount,bind,ro {out} && "
              f"{sys.executable} -c '{RO_SCRIPT}' {trained['config']} {out} {photos['val_dir']}")
    before = sorted(os.listdir(trained["run"]))
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=ROOT, OMP_NUM_THREADS="1"))
    assert [x for x in proc.stdout.splitlines() if " exit " in x] == [
        "train exit 2", "train exit 2", "eval exit 2", "export exit 2", "infer exit 2", "explain exit 2"], \
        proc.stdout[-2000:] + proc.stderr[-3000:]
    errors = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "Traceback" not in proc.stderr and len(errors) == 6, proc.stderr[-3000:]
    for line, key in zip(errors, ["Global.output_dir", "Global.output_dir", "Eval.output", "Export.output",
                                  "Infer.output", "Explain.output"]):
        assert f"{out}" in line and ": the file system is read-only" in line and f"-o {key}=..." in line, line
    assert "top-1" not in proc.stdout + proc.stderr  # no metrics before the refusal
    assert sorted(os.listdir(trained["run"])) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any chmod'ed folder")
def test_a_folder_without_write_permission_is_one_line(trained, capsys):
    locked = trained["tmp"] / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert cli_main(["train", "-c", trained["config"], "-o", f"Global.output_dir={locked}"]) == 2
    finally:
        locked.chmod(0o755)
    line = error_line(capsys)
    assert f"{locked}: permission denied" in line and "-o Global.output_dir=..." in line


def test_permission_denied_is_one_line(trained, monkeypatch, capsys):
    """Injected (root ignores permissions): the write check meets EACCES."""
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(kwargs.get("dir", "."), "x"))

    monkeypatch.setattr(tempfile, "mkstemp", denied)
    assert cli_main(["export", "-c", trained["config"], "-o", f"Global.output_dir={trained['out']}"]) == 2
    line = error_line(capsys)
    assert f"{trained['run']}: permission denied" in line and "-o Export.output=..." in line, line
    assert not (trained["run"] / "inference").exists()


def test_a_file_where_the_output_folder_should_be_is_one_line(trained, capsys):
    blocker = trained["tmp"] / "blocker"
    blocker.write_text("not a folder")
    for verb, key in (("train", "Global.output_dir"), ("eval", "Eval.output")):
        assert cli_main([verb, "-c", trained["config"], "-o", f"Global.output_dir={blocker}"]) == 2
        line = error_line(capsys)
        assert f"{blocker}: a file is in the way where a folder is expected" in line and key in line, line
    assert cli_main(["infer", "-c", trained["config"], "-o", f"Global.output_dir={trained['out']}", "-o",
                     f"Infer.output={blocker / 'sub'}", "-o", f"Infer.images={trained['config']}"]) == 2
    assert "-o Infer.output=..." in error_line(capsys)


def test_a_full_disk_at_an_epoch_end_is_one_line_and_keeps_the_earlier_files(trained, monkeypatch, capsys):
    """ENOSPC injected when the checkpoint of epoch 2 is committed: one line naming the file, exit 2, the
    epoch-1 checkpoint intact and no temp file left."""
    import ppvit.io.atomic as atomic

    out = trained["tmp"] / "full"
    run = out / "tiny"
    real_replace, committed = os.replace, []

    def full(src, dst):
        if os.fspath(dst).endswith("latest.pdparams"):
            if committed:  # the second epoch's
                raise OSError(errno.ENOSPC, "No space left on device", os.fspath(dst))
            real_replace(src, dst)
            committed.append(open(dst, "rb").read())
            return None
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", full)
    assert cli_main(["train", "-c", trained["config"], "-o", f"Global.output_dir={out}", "-o", "Global.epochs=2"]) == 2
    line = error_line(capsys)
    assert f"{run / 'latest.pdparams'}: no space left on the device" in line and "free some space" in line, line
    assert (run / "latest.pdparams").read_bytes() == committed[0]
    assert not [f for f in os.listdir(run) if f.endswith(".tmp")]


def test_each_write_error_gets_its_cause_and_fix():
    from ppvit.io.fs import os_error_message

    cases = {errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied",
             errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is exceeded",
             errno.ENOTDIR: "a file is in the way where a folder is expected",
             errno.EEXIST: "a file is in the way where a folder is expected"}
    for code, cause in cases.items():
        msg = os_error_message(OSError(code, os.strerror(code), "/x/y.pdparams"), "--dst")
        assert msg.startswith(f"/x/y.pdparams: {cause} ({os.strerror(code)}); ") and msg.endswith("with --dst"), msg
    assert os_error_message(OSError(errno.EIO, "I/O error", "/x"), "k") is None  # not the user's: a traceback


# ---------------------------------------------------------------------------------------------- text files
@pytest.fixture
def lists(photos, tmp_path):
    root = tmp_path / "lists"
    root.mkdir()
    for split in ("train", "val"):
        lines = [f"{os.path.join(photos['root'], split, c, f)} {i}" for i, c in enumerate(DEMO_CLASSES)
                 for f in sorted(os.listdir(os.path.join(photos["root"], split, c)))]
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def data_of(root, **extra):
    return dict({"dataset": "filelist", "train_list": str(root / "train.txt"), "val_list": str(root / "val.txt"),
                 "class_id_map_file": None}, **extra)


def test_utf8_with_a_byte_order_mark_reads_like_without(lists):
    names = ["宇航员 astronaut", "猫", "coffee", "rocket"]
    for name, text in (("plain.txt", "utf-8"), ("bom.txt", "utf-8-sig")):
        (lists / name).write_text("".join(f"{i} {n}\n" for i, n in enumerate(names)), encoding=text)
        assert dataset_class_names(data_of(lists, class_id_map_file=str(lists / name))) == names
    # a file list written with a BOM (Notepad): the first path is read without it
    (lists / "train.txt").write_text((lists / "train.txt").read_text(), encoding="utf-8-sig")
    samples, _, _ = split_samples(data_of(lists), "train")
    assert samples[0][0].startswith(os.sep) and os.path.isfile(samples[0][0])


def test_another_encoding_is_one_line_naming_the_file(lists):
    (lists / "gbk.txt").write_bytes("0 宇航员\n1 猫\n2 咖啡\n3 火箭\n".encode("gbk"))
    with pytest.raises(DataError) as err:
        dataset_class_names(data_of(lists, class_id_map_file=str(lists / "gbk.txt")))
    msg = str(err.value)
    assert f"Data.class_id_map_file {lists / 'gbk.txt'} is not UTF-8 text" in msg and "iconv -f GBK" in msg, msg
    (lists / "train.txt").write_bytes("宇航员/1.png 0\n".encode("gbk"))
    with pytest.raises(DataError, match="Data.train_list .*train.txt is not UTF-8 text"):
        split_samples(data_of(lists), "train")


def test_label_ids_must_start_at_0(lists):
    for split in ("train", "val"):
        text = (lists / f"{split}.txt").read_text()
        (lists / f"{split}.txt").write_text("".join(f"{p} {int(i) + 1}\n" for p, i in
                                                    (line.rsplit(" ", 1) for line in text.splitlines())))
    with pytest.raises(DataError) as err:
        dataset_class_names(data_of(lists))
    assert "label ids must start at 0" in str(err.value) and "use 1..4; renumber them 0..3" in str(err.value)
    (lists / "labels.txt").write_text("1 a\n2 b\n3 c\n4 d\n")
    with pytest.raises(DataError, match="class ids must start at 0 and run 0..3 without gaps, got 1..4"):
        dataset_class_names(data_of(lists, class_id_map_file=str(lists / "labels.txt")))


# ---------------------------------------------------------------------------------------------- classes, channels
@pytest.mark.parametrize("n", [3, 5])
def test_num_classes_must_be_the_data_class_count(photos, tmp_path, n):
    """More outputs than classes gave a phantom class (in the eval table, confusion matrix and top-k); fewer
    cannot learn every class: both refused, in training and in the tools that name the classes (export)."""
    from ppvit.commands.common import class_names

    cfg = load_config(None, base=folder_cfg(tmp_path, __import__("pathlib").Path(photos["root"]), num_classes=n))
    msg = f"Arch.num_classes is {n}, but Data.dataset folder has 4 classes .*; set -o Arch.num_classes=4"
    with pytest.raises(ConfigError, match=msg):
        Engine(cfg)
    with pytest.raises(ConfigError, match=msg):
        class_names(cfg)


def test_a_channel_count_other_than_3_is_one_line(tmp_path, capsys):
    config = write_config(tmp_path)
    for override in ("Arch.in_chans=1", "Arch.in_channels=1"):
        assert cli_main(["train", "-c", config, "-o", override, "-o", f"Global.output_dir={tmp_path}"]) == 2
        line = error_line(capsys)
        assert "Arch.in_chans=1: ppvit's data pipelines, export and inference give the model 3-channel RGB" in line
        assert "img_size" not in line
    assert not (tmp_path / "tiny").exists()


# ---------------------------------------------------------------------------------------------- umask
def test_every_file_ppvit_writes_gets_the_umask_permissions(tmp_path):
    """With umask 027, every file the verbs write is 0640 and every folder 0750 (0600 would hide a run from
    the group, 0644 would show it to everyone): weights, checkpoints, logs, figures (explain's PNGs are written
    as these are), exports, safetensors."""
    import cv2

    from ppvit import create_model
    from ppvit.io import save_state

    config = write_config(tmp_path)
    out = tmp_path / "out"
    image = tmp_path / "in" / "a.png"
    image.parent.mkdir()
    cv2.imwrite(str(image), np.full((16, 16, 3), 120, np.uint8))
    o = ["-o", f"Global.output_dir={out}"]
    old = os.umask(0o027)
    try:
        assert cli_main(["train", "-c", config, *o, "-o", "Global.epochs=1", "-o", "Data.limit=16"]) == 0
        assert cli_main(["eval", "-c", config, *o, "-o", "Data.limit=16", "-o", "Eval.grid_images=2"]) == 0
        assert cli_main(["export", "-c", config, *o, "-o", "Export.check_images=0", "-o", "Export.onnx=false"]) == 0
        assert cli_main(["infer", "-c", config, *o, "-o", f"Infer.images={image}"]) == 0
        state = create_model("convmixer_256_8", num_classes=10, dim=16, depth=2).state_dict()
        save_state(state, out / "converted.safetensors")  # what ppvit convert writes
    finally:
        os.umask(old)
    modes = {}
    for base, dirs, files in os.walk(out):
        modes.update({os.path.relpath(os.path.join(base, d), out) + "/": os.stat(os.path.join(base, d)).st_mode & 0o777
                      for d in dirs})
        modes.update({os.path.relpath(os.path.join(base, f), out): os.stat(os.path.join(base, f)).st_mode & 0o777
                      for f in files})
    for must in ("tiny/best_model.pdparams", "tiny/latest.pdstate", "tiny/train.log", "tiny/loss_curve.png",
                 "tiny/eval.json", "tiny/inference/", "tiny/inference/inference.pdiparams", "tiny/infer.json",
                 "converted.safetensors"):
        assert must in modes, sorted(modes)
    wrong = {p: oct(m) for p, m in modes.items() if m != (0o750 if p.endswith("/") else 0o640)}
    assert not wrong, wrong


# ---------------------------------------------------------------------------------------------- Paddle's noise
PADDLE_VALUE_ERROR = ("(InvalidArgument) The type of data we are trying to retrieve (bfloat16) does not match the "
                      "type of data (float32) currently contained in the container.\n  [Hint: Expected dtype() == "
                      "phi::CppTypeToDataType<T>::Type(), but received dtype():10 != ...:16.] "
                      "(at /paddle/paddle/phi/core/dense_tensor.cc:153)")


def test_a_backend_paddle_cannot_run_is_summarised_in_one_clause(tmp_path, monkeypatch, caplog):
    """A backend whose run raises Paddle's C++ ValueError is not offered, with a short reason (not the raw
    ``ValueError: (InvalidArgument)`` with its hint and source location)."""
    import logging

    import ppvit.deploy.export as export
    from ppvit import create_model
    from ppvit.deploy import export_model
    from ppvit.utils.quiet import paddle_error_summary

    assert paddle_error_summary(ValueError(PADDLE_VALUE_ERROR)) == (
        "InvalidArgument: The type of data we are trying to retrieve (bfloat16) does not match the type of data "
        "(float32) currently contained in the container.")
    assert paddle_error_summary(KeyError("x")) == "KeyError: 'x'"
    real = export.open_backend

    def failing(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ValueError(PADDLE_VALUE_ERROR)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(export, "open_backend", failing)
    model = create_model("convmixer_256_8", num_classes=3, dim=8, depth=1, img_size=12)
    with caplog.at_level(logging.WARNING, logger="ppvit"):
        info = export_model(model, str(tmp_path / "m" / "inference"), 12, backends=["paddle", "onnxruntime"],
                            bench_batch_size=4)
    reason = info["backends"]["onnxruntime"]["reason"]
    assert reason.startswith("failed to run (InvalidArgument: The type of data") and "Hint" not in reason, reason
    assert "ValueError" not in caplog.text and "/paddle/paddle" not in caplog.text, caplog.text


def test_paddle_info_lines_and_the_flags_block_are_dropped(capsys):
    """The tools import Paddle with glog's INFO lines off (a user's GLOG_minloglevel is kept), and the
    distributed start's "Modified FLAGS detected" block is dropped while other stderr lines pass."""
    from ppvit.utils.quiet import without_paddle_notices

    code = ("import os; os.environ.pop('GLOG_minloglevel', None)\nimport ppvit.commands._bootstrap\n"
            "print(os.environ['GLOG_minloglevel'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "GLOG_minloglevel"} | {"PYTHONPATH": ROOT})
    assert proc.stdout.strip() == "1", proc.stderr

    def start():
        sys.stderr.write("=" * 23 + " Modified FLAGS detected " + "=" * 23 + "\n")
        sys.stderr.write("FLAGS(name='FLAGS_enable_pir_in_executor', current_value=True, default_value=False)\n")
        sys.stderr.write("=" * 71 + "\nkept line\n")
        return 7

    assert without_paddle_notices(start) == 7
    assert capsys.readouterr().err == "kept line\n"
