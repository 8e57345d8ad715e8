"""Export (Paddle Inference program + ONNX) and classify image files: the predictor must agree with the dygraph
model, through every backend export verified."""
import json
import os

import cv2
import numpy as np
import paddle
import pytest

import ppvit
from ppvit.deploy import (
    ImageReadError,
    Predictor,
    classify_files,
    export_model,
    format_result,
    meta_path,
    read_meta,
)
from ppvit.deploy.backends import ONEDNN_UNSAFE_OPS, program_ops

from tests.parity import assert_served_close

COLOURS = ["red", "green", "blue"]


class ChannelMeans(paddle.nn.Layer):
    """logits = 10 * per-channel mean of the input, so an image's dominant colour is its class."""

    num_classes = 3

    def __init__(self):
        super().__init__()
        self.scale = paddle.nn.Linear(3, 3)
        self.scale.weight.set_value(paddle.eye(3) * 10)
        self.scale.bias.set_value(paddle.zeros([3]))

    def forward(self, x):
        return self.scale(x.mean(axis=[2, 3]))


def _dygraph(model, x):
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


@pytest.fixture
def colour_model(tmp_path):
    model = ChannelMeans()
    prefix = str(tmp_path / "colour" / "inference")
    info = export_model(model, prefix, 16, {"labels": COLOURS, "model": "channel_means", "config": "c.yaml"})
    return model, prefix, info


def test_export_writes_program_params_and_meta(colour_model):
    model, prefix, info = colour_model
    assert os.path.isfile(prefix + ".pdiparams")
    assert os.path.isfile(os.path.join(os.path.dirname(prefix), info["files"]["program"]))
    with open(meta_path(prefix), encoding="utf-8") as f:
        meta = json.load(f)
    assert meta == info == read_meta(prefix)
    assert meta["input"]["shape"] == [None, 3, 16, 16]
    assert meta["image_size"] == [16, 16]
    assert meta["labels"] == COLOURS and meta["num_classes"] == 3
    assert meta["model"] == "channel_means" and meta["config"] == "c.yaml"  # extra keys kept as given
    pp = meta["preprocess"]
    assert pp["resize"] == [16, 16] and pp["crop"] is None and pp["channel_order"] == "RGB"
    assert pp["scale"] == pytest.approx(1 / 255)
    assert pp["mean"] == pytest.approx([0.485, 0.456, 0.406]) and pp["std"] == pytest.approx([0.229, 0.224, 0.225])
    # no temp files left behind, the model is back in its original mode
    assert not [f for f in os.listdir(os.path.dirname(prefix)) if f.startswith(".")]
    assert model.training


def test_export_rejects_inconsistent_meta(tmp_path):
    with pytest.raises(ValueError, match="2 labels"):
        export_model(ChannelMeans(), str(tmp_path / "m"), 16, {"labels": ["a", "b"]})
    with pytest.raises(ValueError, match="unknown preprocess keys"):
        export_model(ChannelMeans(), str(tmp_path / "m"), 16, {"preprocess": {"colour": "RGB"}})
    with pytest.raises(ValueError, match="exported for"):
        export_model(ChannelMeans(), str(tmp_path / "m"), 16, {"preprocess": {"resize": 20, "crop": 18}})


def test_predictor_matches_dygraph_and_chunks_large_batches(colour_model, tmp_path):
    model, prefix, _ = colour_model
    model.eval()
    x = np.random.rand(7, 3, 16, 16).astype("float32")
    ref = _dygraph(model, x)
    # a folder, a prefix and a file of the export all name the same model; fp32 reproduces dygraph
    for where in (prefix, os.path.dirname(prefix), meta_path(prefix)):
        pred = Predictor(where, device="cpu", threads=1, batch_size=3, backend="paddle")  # 7 = 3 + 3 + 1
        out = pred(x)
        assert out.shape == (7, 3)
        np.testing.assert_allclose(out, ref, atol=1e-5)
        # the default (auto) may serve verified bf16 on a CPU that has it: within bf16's tolerance
        auto = Predictor(where, device="cpu", threads=1, batch_size=3)
        assert_served_close(auto.backend_name, auto(x), ref, fp32_atol=1e-5)
    np.testing.assert_allclose(pred.predict_proba(x).sum(1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[N, 3, 16, 16\].*\[2, 3, 32, 32\]"):
        pred(np.zeros([2, 3, 32, 32], "float32"))
    # the message names the files an export for that path would have written: a missing path may be the folder
    # tools/export.py writes (<folder>/inference.*) or a prefix; an empty folder is a folder; a file, a prefix
    nothing = str(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError) as info:
        Predictor(nothing, device="cpu")
    assert str(info.value) == (f"no exported model at {nothing}: expected {nothing}/inference.json and "
                               f"{nothing}/inference.pdiparams (the folder tools/export.py writes), or "
                               f"{nothing}.json and {nothing}.pdiparams (a path prefix)")
    os.makedirs(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match=f"no exported model in the folder {tmp_path / 'empty'}: expected "
                                                f"{tmp_path / 'empty' / 'inference'}.json and "):
        Predictor(str(tmp_path / "empty"), device="cpu")
    with pytest.raises(FileNotFoundError, match=rf"no exported model at {tmp_path / 'gone'}: expected "
                                                rf"{tmp_path / 'gone'}\.json \(or \.pdmodel\) and"):
        Predictor(str(tmp_path / "gone.pdiparams"), device="cpu")


def _write_images(folder):
    """One 20x24 PNG per colour (cv2 writes BGR), plus a JPEG in a sub-folder."""
    os.makedirs(os.path.join(folder, "sub"), exist_ok=True)
    paths = []
    for i, name in enumerate(COLOURS):
        rgb = np.full([20, 24, 3], 40, np.uint8)
        rgb[..., i] = 220
        rgb[:5, :5] = np.random.randint(0, 255, [5, 5, 3])  # some texture, so resizing matters
        path = os.path.join(folder, f"{name}.png")
        cv2.imwrite(path, rgb[..., ::-1])
        paths.append(path)
    return paths


def test_classify_files_top_k_with_class_names(colour_model, tmp_path):
    model, prefix, _ = colour_model
    model.eval()
    paths = _write_images(str(tmp_path / "imgs"))
    pred = Predictor(prefix, device="cpu", backend="paddle")  # fp32: scores compared with dygraph to 1e-5
    results = classify_files(pred, paths, topk=2)
    assert [r["path"] for r in results] == paths
    for r, name in zip(results, COLOURS):
        assert len(r["topk"]) == 2
        assert r["topk"][0]["label"] == name  # BGR file -> RGB model input
        assert r["topk"][0]["class_id"] == COLOURS.index(name)
        assert r["topk"][0]["score"] >= r["topk"][1]["score"]
        assert format_result(r).startswith(f"{r['path']}: {name} (")

    # the scores are the dygraph model's softmax on the notebook's eval transform, done independently:
    # RGB, Resize((16, 16)) with cv2 bilinear, /255, ImageNet mean/std
    imgs = [cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB) for p in paths]
    x = np.stack([cv2.resize(im, (16, 16), interpolation=cv2.INTER_LINEAR) for im in imgs]).astype("float32")
    x = ((x / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]).astype("float32").transpose(0, 3, 1, 2)
    probs = ppvit.deploy.softmax(_dygraph(model, x))
    for r, p in zip(results, probs):
        for t in r["topk"]:
            assert t["score"] == pytest.approx(p[t["class_id"]], abs=1e-5)

    # a folder expands to its image files, sorted
    folder = classify_files(pred, [str(tmp_path / "imgs")], topk=1)
    assert [r["path"] for r in folder] == sorted(paths)


def test_classify_files_non_image_is_a_clear_error(colour_model, tmp_path):
    _, prefix, _ = colour_model
    pred = Predictor(prefix, device="cpu")
    good = _write_images(str(tmp_path / "imgs"))[0]
    bad = tmp_path / "notes.png"
    bad.write_text("this is not an image")
    with pytest.raises(ImageReadError, match="notes.png.*not an image"):
        classify_files(pred, [good, str(bad)])
    assert issubclass(ImageReadError, ValueError)
    # a path that does not exist may have meant a file or a folder; nothing is classified before it is found
    with pytest.raises(ImageReadError, match=r"missing.jpg: no such file or folder$"):
        classify_files(pred, [good, str(tmp_path / "missing.jpg")])
    with pytest.raises(ImageReadError, match=r"no such file or folder \(a pattern such as \*.jpg is not expanded"):
        classify_files(pred, [str(tmp_path / "imgs" / "*.png")])


class PadAllDims(paddle.nn.Layer):
    """F.pad with one pad per dimension: Paddle 3.3's oneDNN `pad` kernel corrupts memory on it."""

    def __init__(self):
        super().__init__()
        self.fc = paddle.nn.Linear(3, 4)

    def forward(self, x):
        x = x.transpose([2, 3, 0, 1])  # H, W, B, C
        return self.fc(paddle.nn.functional.pad(x, [1, 2, 1, 1, 0, 0, 0, 0]).sum(axis=[0, 1]))


def test_program_with_onednn_unsafe_op_runs_on_plain_kernels(tmp_path):
    model = PadAllDims()
    export_model(model, str(tmp_path / "pad"), 6)
    assert "pad" in program_ops(str(tmp_path / "pad.json"))
    pred = Predictor(str(tmp_path / "pad"), device="cpu", backend="paddle")
    assert not pred.onednn
    x = np.random.rand(2, 3, 6, 6).astype("float32")
    np.testing.assert_allclose(pred(x), _dygraph(model, x), atol=1e-5)


# Every notebook model, as small as its constructor allows (dygraph on CPU is slow), exported with a
# dynamic batch and compared with dygraph in eval mode.
NOTEBOOK_MODELS = [
    ("conv2former_n_cifar", {}, 32),
    ("convit_tiny", {"img_size": 32}, 32),
    ("convit_small", {"img_size": 32}, 32),
    ("dilateformer_t", {"img_size": 32}, 32),
    ("coatnet_0", {"image_size": 32}, 32),
    ("convmixer_256_8", {}, 32),
]


@pytest.mark.parametrize("name,kwargs,size", NOTEBOOK_MODELS, ids=[m[0] for m in NOTEBOOK_MODELS])
def test_notebook_model_predictor_matches_dygraph(name, kwargs, size, tmp_path):
    """Every family exports an ONNX model that ONNX Runtime runs to dygraph's logits (<= 1e-4), and every
    backend export verified serves them within its tolerance; auto runs the fastest verified one."""
    assert ppvit.models.is_model(name), f"{name} is not registered"
    model = ppvit.create_model(name, num_classes=10, **kwargs)
    model.eval()
    prefix = str(tmp_path / name)
    info = export_model(model, prefix, size, {"model": name}, bench_batch_size=4)
    assert info["files"]["onnx"] == name + ".onnx"
    assert info["backends"]["onnxruntime"]["verified"], info["backends"]["onnxruntime"]
    assert info["backends"]["paddle"]["verified"], info["backends"]["paddle"]
    x = np.random.rand(3, 3, size, size).astype("float32")
    ref = _dygraph(model, x)
    for backend in ("paddle", "onnxruntime"):
        pred = Predictor(prefix, device="cpu", batch_size=2, backend=backend)  # two batch sizes through one predictor
        out = pred(x)
        assert out.shape == ref.shape == (3, 10) and pred.backend_name == backend
        assert np.isfinite(out).all() and np.abs(out - ref).max() <= 1e-4, (backend, np.abs(out - ref).max())
    auto = Predictor(prefix, device="cpu")
    verified = {n: r for n, r in info["backends"].items() if r["verified"]}
    assert auto.backend_name == info["backend"] in verified
    assert info["backend"] == max(verified, key=lambda n: verified[n]["images_per_s"])
    assert_served_close(auto.backend_name, auto(x), ref)
    # oneDNN (the fast path) stays on unless the program holds an op its kernels get wrong
    pred = Predictor(prefix, device="cpu", backend="paddle")
    pred(x)
    ops = set(program_ops(os.path.join(str(tmp_path), name + ".json")))
    if not ops & set(ONEDNN_UNSAFE_OPS):
        assert pred.onednn
    if name.startswith("dilateformer"):
        # its dilated attention pads with pad3d and its qkv is a plain matmul when exported, so that it
        # runs on oneDNN (several times faster) without the predictor's fallbacks (checked after a run)
        assert "pad" not in ops and "pad3d" in ops
        assert pred.onednn
    # the dygraph model still works after export
    np.testing.assert_allclose(_dygraph(model, x), ref, atol=1e-6)


def test_open_predictor_advice_fits_the_problem(tmp_path):
    """The tools' predictor errors: a missing export names the export command (and, for a file of another name
    than export writes, the path to give instead); a folder holding several exports asks to pick one and does
    not tell the user to export again."""
    from ppvit.commands.common import export_command, open_predictor
    from ppvit.engine.config import ConfigError

    for name in ("a", "b"):  # two exports' files in one folder (their contents are never read)
        for ext in (".json", ".pdiparams"):
            (tmp_path / f"{name}{ext}").write_bytes(b"")
    with pytest.raises(ConfigError) as info:
        open_predictor(str(tmp_path), "cpu", 2, "Eval.model")
    assert str(info.value) == (f"Eval.model: {tmp_path} holds 2 exported models (['a', 'b']); "
                               "give the path prefix of one")
    with pytest.raises(ConfigError) as info:
        open_predictor(str(tmp_path / "deploy" / "model.json"), "cpu", 2, "Infer.model")
    deploy = tmp_path / "deploy"
    assert str(info.value).endswith(f"make it with tools/export.py -c CONFIG -o Export.output={deploy}, which names "
                                    f"its files inference.*: then give {deploy / 'inference'}"), str(info.value)
    # the names export writes need no such note; a folder is Export.output itself
    assert export_command(deploy / "inference.json") == f"tools/export.py -c CONFIG -o Export.output={deploy}"
    assert export_command(deploy) == f"tools/export.py -c CONFIG -o Export.output={deploy}"
