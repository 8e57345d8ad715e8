"""tools/export.py, infer.py, explain.py and the prediction grid of tools/eval.py, run as a user runs them:
from a folder holding ``tools/`` and ``configs/``, on a quick-start model trained for a few seconds on the
embedded digits data. The ``*_CMD`` strings below are run verbatim, as a user types them."""
import json
import os
import shlex
import subprocess
import sys

import cv2
import numpy as np
import paddle
import pytest
from PIL import Image

import ppvit
from ppvit.data import build_dataset, denormalize
from ppvit.engine import ConfigError, load_config
from tests.parity import assert_served_close
from tests.runs import eval_logged_paths

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")

TRAIN_CMD = "python tools/train.py -c configs/quickstart.yaml -o Global.epochs=4 -o Data.limit=640"
EXPORT_CMD = ("python tools/export.py -c configs/quickstart.yaml "
              "-o Global.pretrained_model=output/quickstart/best_model.pdparams")
INFER_CMD = "python tools/infer.py -c configs/quickstart.yaml -o Infer.images=my_images -o Infer.topk=3"
EXPLAIN_CMD = ("python tools/explain.py -c configs/quickstart.yaml "
               "-o Global.pretrained_model=output/quickstart/best_model.pdparams -o 'Explain.indices=[0,3]'")
EXPLAIN_PREDICTOR_CMD = ("python tools/explain.py -c configs/quickstart.yaml "
                         "-o Explain.model=output/quickstart/inference -o 'Explain.indices=[0,3]'")
EVAL_CMD = ("python tools/eval.py -c configs/quickstart.yaml "
            "-o Global.pretrained_model=output/quickstart/best_model.pdparams")
EVAL_PREDICTOR_CMD = "python tools/eval.py -c configs/quickstart.yaml -o Eval.model=output/quickstart/inference"
# fp32 Paddle Inference where a result must equal dygraph's bit for bit (auto may pick a verified bf16 backend)
FP32 = {"explain": ["-o", "Explain.backend=paddle"], "eval": ["-o", "Eval.backend=paddle"]}
N_IMAGES = 4


def run(cmd, cwd, *extra):
    argv = shlex.split(cmd)
    argv[0] = sys.executable
    return subprocess.run(argv + list(extra), cwd=cwd, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PPVIT_OFFLINE="1"))


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def assert_png(path):
    assert os.path.isfile(path), path
    with Image.open(path) as im:
        assert im.format == "PNG" and min(im.size) >= 100
        im.load()


def test_images(n):
    """The first ``n`` quick-start test images as RGB uint8 (as the model sees them) and their labels."""
    cfg = load_config(QUICKSTART)
    data = build_dataset(cfg["Data"], "test", cfg["Arch"]["img_size"])
    items = [data[i] for i in range(n)]
    chw = np.stack([x for x, _ in items])
    rgb = np.rint(denormalize(chw, cfg["Data"]["transform"]) * 255).astype(np.uint8)
    return chw, rgb, [int(np.ravel(y)[0]) for _, y in items]


test_images.__test__ = False  # a helper, not a test


def dygraph_model(work):
    return ppvit.create_model("convmixer_256_8", num_classes=10, dim=64, depth=4,
                              pretrained=str(work / "output" / "quickstart" / "best_model.pdparams")).eval()


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A user's folder: tools/, configs/, a trained quick-start run, the run exported, a few PNG files."""
    work = tmp_path_factory.mktemp("export_infer_explain")
    for name in ("tools", "configs"):
        os.symlink(os.path.join(ROOT, name), work / name)
    ok(run(TRAIN_CMD, work))
    proc = ok(run(EXPORT_CMD, work))
    (work / "export.log").write_text(proc.stdout + proc.stderr)
    _, rgb, labels = test_images(N_IMAGES)
    (work / "my_images").mkdir()
    for i, image in enumerate(rgb):
        cv2.imwrite(str(work / "my_images" / f"digit{i}.png"), image[:, :, ::-1])  # cv2 writes BGR
    (work / "labels.json").write_text(json.dumps(labels))
    return work


# --------------------------------------------------------------------------------------------- export
def test_export_writes_model_and_json_and_predictor_matches_dygraph(work):
    folder = work / "output" / "quickstart" / "inference"
    for f in ("inference.json", "inference.pdiparams", "inference.meta.json"):
        assert (folder / f).is_file(), f
    meta = json.loads((folder / "inference.meta.json").read_text())
    assert meta["labels"] == [str(i) for i in range(10)] and meta["model"] == "convmixer_256_8"
    assert meta["input"]["shape"] == [None, 3, 16, 16]
    pp = meta["preprocess"]
    assert pp["resize"] == [16, 16] and pp["channel_order"] == "RGB" and pp["scale"] == pytest.approx(1 / 255)
    assert "max abs diff" in (work / "export.log").read_text()

    from ppvit.deploy import Predictor

    chw, rgb, _ = test_images(8)
    with paddle.no_grad():
        expected = dygraph_model(work)(paddle.to_tensor(chw)).numpy()
    predictor = Predictor(str(folder), device="cpu")
    assert_served_close(predictor.backend_name, predictor(chw), expected)
    # the exported preprocessing of the RGB image reproduces the eval transform's input
    pre = np.stack([predictor.preprocess(im, color="RGB") for im in rgb])
    assert np.abs(pre - chw).max() <= 1e-5


def test_export_to_another_folder_and_bad_weights(work, tmp_path):
    proc = ok(run(EXPORT_CMD, work, "-o", f"Export.output={tmp_path / 'deploy'}", "-o", "Export.onnx=false"))
    assert (tmp_path / "deploy" / "inference.pdiparams").is_file()
    assert not (tmp_path / "deploy" / "inference.onnx").exists()
    assert "exported convmixer_256_8" in proc.stdout
    # the backends' figures and the summary once each: the library's own summary line is debug-level
    text = proc.stdout + proc.stderr
    assert text.count("exported ") == 1 and "verified backends, images/s" not in text, text
    bad = run(EXPORT_CMD, work, "-o", "Arch.depth=2", "-o", f"Export.output={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "unexpected" in bad.stderr
    assert not (tmp_path / "bad").exists()


# ---------------------------------------------------------------------------------------------- infer
def test_infer_prints_topk_with_class_names(work):
    proc = ok(run(INFER_CMD, work))
    lines = [l for l in proc.stdout.splitlines() if l.startswith("my_images")]
    assert len(lines) == N_IMAGES, proc.stdout
    run_dir = work / "output" / "quickstart"
    saved = json.loads((run_dir / "infer.json").read_text())
    # Infer.backend=auto runs the fastest backend verified at export; bf16 is verified to 0.02 in probability
    tol = 0.02 if saved["backend"] == "paddle_bf16" else 2e-3
    chw, _, labels = test_images(N_IMAGES)
    with paddle.no_grad():
        probs = paddle.nn.functional.softmax(dygraph_model(work)(paddle.to_tensor(chw)), -1).numpy()
    for i, line in enumerate(lines):
        path, tops = line.split(": ", 1)
        assert path == os.path.join("my_images", f"digit{i}.png")
        entries = [t.rsplit(" (", 1) for t in tops.split(", ")]
        assert len(entries) == 3
        names, scores = [n for n, _ in entries], [float(s.rstrip(")")) for _, s in entries]
        top = np.sort(probs[i])[::-1]
        if tol < 0.02 or top[0] - top[1] > 2 * tol:  # a near tie may swap under bf16
            assert names[0] == str(np.argmax(probs[i]))
        if tol < 0.02:
            assert names == [str(c) for c in np.argsort(-probs[i])[:3]]  # class names of the digits dataset
        assert scores == pytest.approx(top[:3], abs=tol)
    if tol < 0.02:
        assert [r["topk"][0]["class_id"] for r in saved["results"]] == list(np.argmax(probs, 1))
    assert_png(run_dir / "infer_predictions.png")
    # a named backend that export verified runs too; fp32 Paddle Inference gives dygraph's scores
    ok(run(INFER_CMD, work, "-o", "Infer.backend=paddle"))
    fp32 = json.loads((run_dir / "infer.json").read_text())
    assert fp32["backend"] == "paddle"
    for r, p in zip(fp32["results"], probs):
        assert [t["class_id"] for t in r["topk"]] == list(np.argsort(-p)[:3])
        assert [t["score"] for t in r["topk"]] == pytest.approx(np.sort(p)[::-1][:3], abs=2e-5)
    bad = run(INFER_CMD, work, "-o", "Infer.backend=fast")
    assert bad.returncode == 2 and "Infer.backend" in bad.stderr and "Traceback" not in bad.stderr
    # a model this briefly trained still gets most digits right: the predictions are real ones
    assert np.mean(np.argmax(probs, 1) == labels) >= 0.5


@pytest.mark.parametrize("what", ["file", "in-list"])
def test_infer_non_image_is_one_clear_error(work, what):
    (work / "notes.txt").write_text("not an image")
    images = "notes.txt" if what == "file" else "[my_images/digit0.png,notes.txt]"
    proc = run("python tools/infer.py -c configs/quickstart.yaml", work, "-o", f"Infer.images={images}")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "my_images" not in proc.stdout
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "notes.txt" in errors[0] and "not an image" in errors[0], proc.stderr


def test_infer_without_images_or_model_names_the_key(work, tmp_path):
    proc = run("python tools/infer.py -c configs/quickstart.yaml", work)
    assert proc.returncode == 2 and "Infer.images" in proc.stderr and "Traceback" not in proc.stderr
    proc = run(INFER_CMD, work, "-o", f"Infer.model={tmp_path / 'none'}")
    assert proc.returncode == 2 and "Infer.model" in proc.stderr and "tools/export.py" in proc.stderr


# -------------------------------------------------------------------------------------------- explain
def test_explain_writes_lime_figures_deterministically(work, tmp_path):
    """Same seed, same figures (byte for byte), whether the model runs in dygraph or as the exported
    predictor; a figure does not depend on the other images asked for."""
    proc = ok(run(EXPLAIN_CMD, work))
    assert "LIME" in proc.stderr  # the tqdm bar
    # LIME's default superpixels scale with the image: enough on the 16x16 digits, so no advice to get more
    assert "LIME found only" not in proc.stdout, proc.stdout
    # interpretdl's arguments find too few there: one log line per image names the keys that give more
    coarse = ok(run(EXPLAIN_CMD, work, "-o", "Explain.kernel_size=5", "-o", "Explain.max_dist=10",
                    "-o", "Explain.num_samples=20", "-o", f"Explain.output={tmp_path / 'coarse'}"))
    advice = [line for line in coarse.stdout.splitlines() if "LIME found only" in line]
    assert len(advice) == 2 and all("-o Explain.kernel_size=2" in line for line in advice), coarse.stdout
    assert "FewSuperpixelsWarning" not in proc.stderr + coarse.stderr
    folder = work / "output" / "quickstart" / "explain"
    figures = {f: (folder / f).read_bytes() for f in ("lime_test0.png", "lime_test3.png")}
    for f in figures:
        assert_png(folder / f)
    ok(run(EXPLAIN_CMD, work, "-o", f"Explain.output={tmp_path / 'again'}", "-o", "Explain.indices=3"))
    assert (tmp_path / "again" / "lime_test3.png").read_bytes() == figures["lime_test3.png"]
    ok(run(EXPLAIN_PREDICTOR_CMD, work, *FP32["explain"], "-o", f"Explain.output={tmp_path / 'predictor'}"))
    for f in figures:  # the same pixels; the PNG text names the source (the weights, and here the export)
        with Image.open(folder / f) as a, Image.open(tmp_path / "predictor" / f) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b))
            assert a.text["Source"].split(" (exported")[0] == b.text["Source"].split(" (exported")[0]
            assert "exported model" in b.text["Source"]


def test_explain_gradcam_beside_lime_with_faithfulness(work, tmp_path):
    """Explain.method=both: a Grad-CAM figure beside each LIME one, and every explanation's deletion/insertion
    AUCs in explain.json; through the exported model, Grad-CAM runs on the weights it was exported from."""
    out = tmp_path / "both"
    proc = ok(run(EXPLAIN_CMD, work, "-o", "Explain.method=both", "-o", "Explain.num_samples=100",
                  "-o", f"Explain.output={out}"))
    assert "Grad-CAM (layer 6)" in proc.stdout
    figures = ["gradcam_test0.png", "gradcam_test3.png", "lime_test0.png", "lime_test3.png"]
    assert sorted(os.listdir(out)) == ["explain.json"] + figures
    for f in figures:
        assert_png(out / f)
    index = json.loads((out / "explain.json").read_text())
    assert index["method"] == "both" and index["gradcam_layer"] == "6"
    entries = index["explanations"]
    assert {(e["method"], e["image"]) for e in entries} == {(m, f"test image {i}") for m in ("lime", "gradcam")
                                                            for i in (0, 3)}
    for e in entries:
        f = e["faithfulness"]
        assert len(f["deletion"]) == len(f["fractions"]) == 21 and f["class_id"] == e["class_id"]
        for key in ("deletion_auc", "insertion_auc", "deletion_auc_random", "insertion_auc_random"):
            assert 0.0 <= f[key] <= 1.0
        assert f["deletion"][0] == pytest.approx(e["probability"], abs=1e-5)
    # the Grad-CAM maps are those of the run's weights, through the exported model too
    chw, _, _ = test_images(1)
    from ppvit.explain import GradCAM

    cam = GradCAM(dygraph_model(work))
    maps = cam(chw)
    exported = tmp_path / "exported"
    ok(run(EXPLAIN_PREDICTOR_CMD, work, "-o", "Explain.method=gradcam", "-o", "Explain.indices=0",
           "-o", f"Explain.output={exported}"))
    index = json.loads((exported / "explain.json").read_text())
    assert index["figures"] == ["gradcam_test0.png"] and index["model"]
    assert index["explanations"][0]["class_id"] == cam.class_ids[0]
    assert maps.shape == (1, 16, 16)
    # other weights than the export's are refused for Grad-CAM, in one line
    other = tmp_path / "other.pdparams"
    paddle.save(ppvit.create_model("convmixer_256_8", num_classes=10, dim=64, depth=4).state_dict(), str(other))
    bad = run(EXPLAIN_PREDICTOR_CMD, work, "-o", "Explain.method=gradcam", "-o", f"Global.pretrained_model={other}",
              "-o", f"Explain.output={tmp_path / 'bad'}")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "exported from" in bad.stderr, bad.stderr
    assert not (tmp_path / "bad").exists()


def test_explain_image_files_through_predictor(work, tmp_path):
    out = tmp_path / "files"
    proc = ok(run("python tools/explain.py -c configs/quickstart.yaml", work, "-o", "Explain.images=my_images",
                  "-o", "Explain.use_predictor=true", "-o", "Explain.num_samples=100", "-o", "Explain.top_k=2",
                  "-o", f"Explain.output={out}"))
    assert "(exported on the fly)" in proc.stdout
    figures = [f"lime_digit{i}.png" for i in range(N_IMAGES)]
    assert sorted(os.listdir(out)) == ["explain.json"] + figures  # the figures and which weights they explain
    for f in figures:
        assert_png(out / f)
    index = json.loads((out / "explain.json").read_text())
    assert sorted(index["figures"]) == figures and index["source_weights"]["sha256"]
    (work / "notes.txt").write_text("not an image")
    bad = run("python tools/explain.py -c configs/quickstart.yaml", work, "-o", "Explain.images=notes.txt")
    assert bad.returncode == 2 and "notes.txt" in bad.stderr and "Traceback" not in bad.stderr
    bad = run(EXPLAIN_CMD, work, "-o", "Explain.indices=[5000]")
    assert bad.returncode == 2 and "Explain.indices" in bad.stderr and "360" in bad.stderr


# ----------------------------------------------------------------------------------------- eval grid
def test_eval_writes_prediction_grid(work):
    proc = ok(run(EVAL_CMD, work, "-o", "Eval.grid_images=12"))
    png = work / "output" / "quickstart" / "predictions.png"
    assert "prediction grid" in proc.stdout
    assert_png(png)


def _logged(proc, what):
    """The path an eval run's log line ``<what>: <path>`` names."""
    found = eval_logged_paths(proc)
    assert what in found, proc.stdout[-3000:]
    return found[what]


def _eval_result(proc, work):
    """The eval.json the run just made wrote (where its log says), and the per-class table (header to the
    "all" line) of its log."""
    result = json.loads((work / _logged(proc, "metrics")).read_text())
    lines = proc.stdout.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("class "))
    end = next(i for i, l in enumerate(lines) if l.startswith("all "))
    return result, lines[start:end + 1]


def test_eval_through_predictor_matches_dygraph(work):
    """tools/eval.py through Paddle Inference (the exported model, or the weights exported on the fly) gives
    the dygraph evaluation's metrics, per-class table and confusion matrix, and its prediction grid."""
    run_dir = work / "output" / "quickstart"
    proc = ok(run(EVAL_CMD, work))
    dygraph, dy_table = _eval_result(proc, work)
    assert dygraph["forward"] == "Paddle dygraph" and dygraph["count"] == 360 and len(dy_table) == 12
    runs = {"exported": (EVAL_PREDICTOR_CMD, FP32["eval"]),
            "on the fly": (EVAL_CMD, ["-o", "Eval.use_predictor=true"] + FP32["eval"])}
    for how, (cmd, extra) in runs.items():
        for png in run_dir.glob("predictions*.png"):
            png.unlink()
        proc = ok(run(cmd, work, *extra))
        result, table = _eval_result(proc, work)
        assert result["forward"].startswith("Paddle Inference") and "through Paddle Inference" in proc.stdout
        assert result["count"] == dygraph["count"]
        assert result["top1"] == dygraph["top1"] and result["top5"] == dygraph["top5"], how
        assert abs(result["loss"] - dygraph["loss"]) <= 1e-4, (how, result["loss"], dygraph["loss"])
        assert result["confusion"] == dygraph["confusion"] and table == dy_table, how
        assert_png(work / _logged(proc, "prediction grid"))
        # the exported model's evaluation goes beside the dygraph one, not over it; the same weights exported on
        # the fly re-evaluate them in place
        name = "eval_inference.json" if how == "exported" else "eval.json"
        assert os.path.basename(_logged(proc, "metrics")) == name, how
        # whose weights: the exported model's files, or the same Global.pretrained_model
        expected = os.path.join("output", "quickstart", "inference", "inference") if how == "exported" \
            else dygraph["weights"]
        assert result["weights"] == expected, how


def test_eval_with_missing_exported_model_is_one_clear_error(work, tmp_path):
    (work / "output" / "quickstart" / "eval.json").unlink(missing_ok=True)
    proc = run(EVAL_CMD, work, "-o", f"Eval.model={tmp_path / 'nowhere'}")
    assert proc.returncode == 2, proc.stderr
    errors = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "Eval.model" in errors[0] and "nowhere" in errors[0] and "tools/export.py" in errors[0]
    assert not (work / "output" / "quickstart" / "eval.json").exists()  # nothing evaluated, nothing written


def test_grid_marks_wrong_predictions_red():
    from ppvit.explain import prediction_grid

    _, rgb, labels = test_images(6)
    pred = list(labels)
    pred[1] = (labels[1] + 1) % 10
    fig = prediction_grid(rgb, pred, labels, class_names=[f"d{i}" for i in range(10)], ncols=4)
    axes = fig.axes
    assert len(axes) == 6
    assert axes[1].get_title() == f"pred: d{pred[1]}\ntrue: d{labels[1]}"
    assert fig._suptitle.get_text() == "pred: predicted class, true: ground truth; green = right, red (framed) = wrong"
    colors = [ax.title.get_color() for ax in axes]
    assert colors[1] == "tab:red" and all(c == "tab:green" for i, c in enumerate(colors) if i != 1)
    assert axes[1].spines["top"].get_linewidth() == 3 and axes[0].spines["top"].get_linewidth() < 3
    # without true labels nothing is marked
    fig = prediction_grid(rgb[:2], pred[:2], probs=[0.9, 0.5])
    assert [ax.get_title() for ax in fig.axes] == [f"pred: {pred[0]} (0.90)", f"pred: {pred[1]} (0.50)"]
    assert {ax.title.get_color() for ax in fig.axes} == {"black"}
    with pytest.raises(ValueError, match="same length"):
        prediction_grid(rgb[:2], pred[:3])


def test_new_config_sections_are_checked():
    cfg = load_config(QUICKSTART)
    assert cfg["Explain"]["indices"] == [0] and cfg["Infer"]["topk"] == 5 and cfg["Eval"]["grid_images"] == 18
    assert cfg["Eval"]["model"] is None and cfg["Eval"]["use_predictor"] is False
    with pytest.raises(ConfigError, match="unknown key Infer.image.*did you mean images"):
        load_config(QUICKSTART, ["Infer.image=a.png"])
    with pytest.raises(ConfigError, match="Explain.num_samples must be >= 2"):
        load_config(QUICKSTART, ["Explain.num_samples=1"])
