"""One preprocessing: export records the run's eval pipeline as data, and infer (classify_files through the fp32
predictor) and explain's images apply exactly it, so infer's probabilities are evaluation's. Photos at 96 px
resized to a 32-px model: a cv2 resize where evaluation used PIL (or squashed where it crops) shows up."""
import numpy as np
import paddle
import pytest

import ppvit
from ppvit.commands.common import preprocess_of, rgb_file
from ppvit.data import build_dataset, data_config
from ppvit.data.demo import write_photo_demo
from ppvit.deploy import Predictor, classify_files, export_model
from ppvit.engine.config import validate
from ppvit.utils.softmax import softmax

CUSTOM = [{"TimmResizeShorter": {"interpolation": "bicubic"}}, {"TimmCenterCrop": {}}, {"TimmNormalize": {}}]
CASES = {
    "convit": {"transform": "convit"},  # PIL resize, 0..255 pixels
    "conv2former_cifar": {"transform": "conv2former_cifar"},  # cv2 preset
    "custom": {"transform": "basic", "eval_ops": CUSTOM, "image_backend": "pil"},  # shorter side + crop
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    write_photo_demo(str(root), train_per_class=1, val_per_class=1, size=96)
    return root


def _cfg(root, data):
    return validate({
        "Global": {"epochs": 1, "device": "cpu"},
        "Arch": {"name": "convmixer_256_8", "num_classes": 4, "img_size": 32, "dim": 16, "depth": 1},
        "Optimizer": {"lr": 0.1},
        "Data": {"dataset": "folder", "train_dir": str(root / "train"), "val_dir": str(root / "val"),
                 "batch_size": 2, "eval_batch_size": 2, **data}})


@pytest.mark.parametrize("case", list(CASES))
def test_infer_gives_the_eval_pipelines_probabilities(photos, tmp_path, case):
    cfg = _cfg(photos, CASES[case])
    paddle.seed(0)
    model = ppvit.create_model("convmixer_256_8", num_classes=4, dim=16, depth=1)
    model.eval()
    prefix = str(tmp_path / "inference")
    export_model(model, prefix, 32, {"preprocess": preprocess_of(cfg)}, onnx=False, backends=["paddle"])
    predictor = Predictor(prefix, device="cpu", backend="paddle")
    data = build_dataset(data_config(cfg), "test", cfg["Arch"]["img_size"])
    files = [path for path, _ in data.samples]
    x = np.stack([data[i][0] for i in range(len(files))])
    with paddle.no_grad():
        logits = model(paddle.to_tensor(x)).numpy()
    want = softmax(logits)
    assert np.abs(want - 0.25).max() > 0.05  # the model separates the photos: a wrong input would show
    got = classify_files(predictor, files, topk=4)
    probs = np.zeros_like(want)
    for i, r in enumerate(got):
        for t in r["topk"]:
            probs[i, t["class_id"]] = t["score"]
    assert np.abs(probs - want).max() <= 1e-3, np.abs(probs - want).max()
    # the predictor's input is evaluation's tensor itself
    image = rgb_file(files[0])
    np.testing.assert_allclose(predictor.preprocess(image, color="RGB"), x[0], rtol=1e-6, atol=1e-4)
    # explain's image is the eval pipeline's model-size image before normalisation
    shown = rgb_file(files[0], (32, 32), predictor.meta["preprocess"])
    assert shown.shape == (32, 32, 3) and shown.dtype == np.uint8
    pp = predictor.meta["preprocess"]
    renorm = ((shown.astype(np.float32) * np.float32(pp["scale"]) - np.float32(pp["mean"]))
              / np.float32(pp["std"])).transpose(2, 0, 1)
    np.testing.assert_allclose(renorm, x[0], atol=1e-4)


def test_model_cfg_preprocess_is_timms_eval_transform(tmp_path):
    """Without a data config, export records the model's pretrained_cfg eval transform (crop_pct, filter)."""
    from PIL import Image

    from ppvit.data import create_transform

    model = ppvit.create_model("convmixer_256_8", num_classes=4, dim=16, depth=1)
    model.eval()
    prefix = str(tmp_path / "m")
    export_model(model, prefix, 32, onnx=False, backends=["paddle"])
    predictor = Predictor(prefix, device="cpu", backend="paddle")
    mc = ppvit.get_model_cfg("convmixer_256_8")
    image = np.random.RandomState(0).randint(0, 256, (50, 70, 3)).astype(np.uint8)
    want = create_transform(32, crop_pct=mc.crop_pct, interpolation=mc.interpolation, mean=mc.mean,
                            std=mc.std)(Image.fromarray(image))
    np.testing.assert_allclose(predictor.preprocess(image, color="RGB"), want, atol=1e-6)
