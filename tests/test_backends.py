"""Inference backends: every artefact is verified against dygraph at export, a broken one is not offered (with
its warning), ``auto`` runs the fastest verified one, bf16 only where the CPU has it, and exporting is offline."""
import importlib.metadata
import logging
import os
import shutil
import sys

import numpy as np
import paddle
import pytest

import ppvit
from ppvit.deploy import BACKENDS, BackendError, Predictor, bf16_support, export_model, read_meta
from ppvit.deploy import onnx_export
from ppvit.engine.config import BACKENDS as CONFIG_BACKENDS
from tests.parity import assert_served_close


class SmallNet(paddle.nn.Layer):
    """Conv + GroupNorm (the op whose ONNX epsilon paddle2onnx garbles) + pad3d + linear head."""

    num_classes = 5

    def __init__(self):
        super().__init__()
        self.conv = paddle.nn.Conv2D(3, 8, 3, padding=1)
        self.norm = paddle.nn.GroupNorm(1, 8)
        self.head = paddle.nn.Linear(8, 5)

    def forward(self, x):
        x = self.norm(self.conv(x))
        x = paddle.nn.functional.pad(x.unsqueeze(1), [1, 1, 1, 1, 0, 0], data_format="NCDHW").squeeze(1)
        return self.head(x.mean(axis=[2, 3]) * 4.0)


def _dygraph(model, x):
    with paddle.no_grad():
        return model(paddle.to_tensor(x)).numpy()


@pytest.fixture
def small(tmp_path):
    model = SmallNet()
    model.eval()
    prefix = str(tmp_path / "small" / "inference")
    return model, prefix


def test_config_backends_are_the_deploy_backends():
    assert CONFIG_BACKENDS == ("auto",) + BACKENDS


def test_auto_picks_the_fastest_verified_backend_and_records_it(small):
    model, prefix = small
    info = export_model(model, prefix, 12, bench_batch_size=4)
    assert info == read_meta(prefix)
    recs = info["backends"]
    assert set(recs) == set(BACKENDS)
    for name in ("paddle", "onnxruntime"):  # fp32 engines reproduce dygraph
        assert recs[name]["verified"] and recs[name]["max_abs_diff"] <= 1e-4, recs[name]
        assert recs[name]["images_per_s"] > 0
    verified = [n for n, r in recs.items() if r["verified"]]
    assert info["backend"] == max(verified, key=lambda n: recs[n]["images_per_s"])
    assert info["verification"]["fp32_tolerance"] == 1e-4
    assert set(info["sha256"]) == {f for f in info["files"].values() if f}
    pred = Predictor(prefix, device="cpu")
    assert pred.backend_name == info["backend"] and pred.backend_record == recs[info["backend"]]
    x = np.random.rand(3, 3, 12, 12).astype("float32")
    ref = _dygraph(model, x)
    assert_served_close(pred.backend_name, pred(x), ref)
    for name in verified:  # each verified backend can be named
        assert Predictor(prefix, device="cpu", backend=name).backend_name == name


def test_bf16_verified_or_skipped_with_its_reason(small):
    model, prefix = small
    info = export_model(model, prefix, 12, backends=["paddle", "paddle_bf16"], bench_batch_size=4)
    rec = info["backends"]["paddle_bf16"]
    ok, why = bf16_support()
    if ok:  # this CPU has avx512_bf16/AMX: bf16 runs and stays within its tolerance
        assert rec["verified"], rec
        assert rec["rel_diff"] <= info["verification"]["bf16_tolerance"] and rec["max_abs_diff"] > 0
    else:
        assert not rec["verified"] and rec["reason"] == why and "bf16" in why
        with pytest.raises(BackendError, match="paddle_bf16.*not offered.*bf16"):
            Predictor(prefix, device="cpu", backend="paddle_bf16")


def test_broken_onnx_is_rejected_with_a_warning(small, monkeypatch, caplog):
    """A converter that silently changes a weight (as paddle2onnx's float64 attribute bug did) is caught."""
    from onnx import numpy_helper

    real_convert = onnx_export.convert

    def perturbed(*args, **kwargs):
        onnx_model = real_convert(*args, **kwargs)
        init = max(onnx_model.graph.initializer, key=lambda t: np.prod(t.dims))  # the conv weight
        w = numpy_helper.to_array(init).copy()
        w.flat[0] += 0.5
        init.CopyFrom(numpy_helper.from_array(w, init.name))
        return onnx_model

    monkeypatch.setattr(onnx_export, "convert", perturbed)
    model, prefix = small
    with caplog.at_level(logging.WARNING, logger="ppvit"):
        info = export_model(model, prefix, 12, backends=["paddle", "onnxruntime"], bench_batch_size=4)
    rec = info["backends"]["onnxruntime"]
    assert not rec["verified"] and "logits differ from dygraph" in rec["reason"] and rec["max_abs_diff"] > 1e-4
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("backend onnxruntime not offered: logits differ" in w for w in warnings), warnings
    assert info["backend"] == "paddle"
    assert Predictor(prefix, device="cpu").backend_name == "paddle"
    with pytest.raises(BackendError, match="onnxruntime.*not offered.*logits differ"):
        Predictor(prefix, device="cpu", backend="onnxruntime")


def test_tampered_params_are_not_served(small, caplog):
    model, prefix = small
    info = export_model(model, prefix, 12, backends=["paddle", "onnxruntime"], bench_batch_size=4)
    with open(prefix + ".pdiparams", "r+b") as f:  # flip bits of one stored weight
        f.seek(-8, os.SEEK_END)
        data = f.read(4)
        f.seek(-8, os.SEEK_END)
        f.write(bytes(b ^ 0x55 for b in data))
    with pytest.raises(BackendError, match=r"inference.pdiparams changed after it was verified"):
        Predictor(prefix, device="cpu", backend="paddle")
    # auto serves the other verified backend, whose file is intact, and says why
    with caplog.at_level(logging.WARNING, logger="ppvit"):
        pred = Predictor(prefix, device="cpu")
    assert pred.backend_name == "onnxruntime"
    assert any("backend paddle skipped" in r.getMessage() for r in caplog.records) or info["backend"] != "paddle"
    x = np.random.rand(2, 3, 12, 12).astype("float32")
    assert np.abs(pred(x) - _dygraph(model, x)).max() <= 1e-4


def test_files_are_hashed_at_export_not_on_every_open(small, monkeypatch):
    """Opening an export whose files are as export left them (size, mtime, ctime recorded) reads no file to hash
    it; a copied export (new times, same bytes) is hashed once per open and served; changed bytes are refused
    (also test_tampered_params_are_not_served)."""
    from ppvit.deploy import predictor as predictor_module

    model, prefix = small
    info = export_model(model, prefix, 12, onnx=False, backends=["paddle"], bench_batch_size=4)
    assert set(info["file_stats"]) == set(info["sha256"])
    hashed = []
    sha256_file = predictor_module.sha256_file
    monkeypatch.setattr(predictor_module, "sha256_file", lambda path: hashed.append(path) or sha256_file(path))
    Predictor(prefix, device="cpu", backend="paddle")
    assert hashed == []
    copy = os.path.join(os.path.dirname(os.path.dirname(prefix)), "copy")
    shutil.copytree(os.path.dirname(prefix), copy)  # same bytes, new times
    x = np.random.rand(2, 3, 12, 12).astype("float32")
    assert np.abs(Predictor(os.path.join(copy, "inference"), device="cpu")(x) - _dygraph(model, x)).max() <= 1e-4
    assert sorted(os.path.basename(p) for p in hashed) == ["inference.json", "inference.pdiparams"]
    params = prefix + ".pdiparams"
    st = os.stat(params)
    with open(params, "r+b") as f:  # changed bytes, then the recorded mtime put back: the ctime still moves
        f.seek(-8, os.SEEK_END)
        data = f.read(4)
        f.seek(-8, os.SEEK_END)
        f.write(bytes(b ^ 0x55 for b in data))
    os.utime(params, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert os.stat(params).st_mtime_ns == info["file_stats"]["inference.pdiparams"]["mtime_ns"]
    with pytest.raises(BackendError, match=r"inference.pdiparams changed after it was verified"):
        Predictor(prefix, device="cpu", backend="paddle")


def test_check_images_top1_agreement_is_recorded(small):
    model, prefix = small
    check = np.random.rand(6, 3, 12, 12).astype("float32")
    info = export_model(model, prefix, 12, backends=["paddle"], check_images=check, bench_batch_size=4)
    assert info["backends"]["paddle"]["top1_agreement"] == 1.0
    assert "6 check images" in info["verification"]["inputs"]
    with pytest.raises(ValueError, match=r"check_images must be .*\[N, 3, 12, 12\]"):
        export_model(model, prefix, 12, backends=["paddle"], check_images=check[:, :, :8])


def test_export_without_verification_serves_only_paddle_fp32(small):
    model, prefix = small
    info = export_model(model, prefix, 12, onnx=False, backends=[])
    assert info["backends"] == {} and info["backend"] is None and info["files"]["onnx"] is None
    assert Predictor(prefix, device="cpu").backend_name == "paddle"
    with pytest.raises(BackendError, match="onnxruntime.*not verified"):
        Predictor(prefix, device="cpu", backend="onnxruntime")
    with pytest.raises(BackendError, match="unknown backend 'fast'"):
        Predictor(prefix, device="cpu", backend="fast")


def test_source_weights_recorded(small, tmp_path):
    model, prefix = small
    weights = tmp_path / "best_model.pdparams"
    paddle.save(model.state_dict(), str(weights))
    info = export_model(model, prefix, 12, {"weights": str(weights)}, backends=["paddle"], bench_batch_size=4)
    src = info["source_weights"]
    assert src["path"] == str(weights) and src["size"] == weights.stat().st_size
    assert src["mtime"] == weights.stat().st_mtime and len(src["sha256"]) == 64


def _distributions():
    return sorted((d.metadata["Name"], d.version) for d in importlib.metadata.distributions())


def test_export_is_offline_quiet_and_installs_nothing(small, capfd, monkeypatch):
    """paddle2onnx's Polygraphy step pip-installed packages and printed ~20 lines; export must do neither."""
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # were anything to call pip, it could not download
    monkeypatch.delenv("POLYGRAPHY_AUTOINSTALL_DEPS", raising=False)
    before = _distributions()
    model, prefix = small
    capfd.readouterr()
    info = export_model(model, prefix, 12, bench_batch_size=4)
    out, err = capfd.readouterr()
    assert info["backends"]["onnxruntime"]["verified"]
    assert _distributions() == before
    assert "POLYGRAPHY_AUTOINSTALL_DEPS" not in os.environ and "polygraphy" not in sys.modules
    for noise in ("Paddle2ONNX", "Polygraphy", "pip install", "onnxruntime", "Removing initializer"):
        assert noise not in out + err, (noise, out + err)


def test_every_family_onnx_is_finite_and_close_on_image_like_inputs(tmp_path):
    """conv2former_n_cifar gave NaN logits under ONNX Runtime (paddle2onnx's garbage GroupNorm epsilon; its export
    now normalises the downsampling with a LayerNorm, see the next test for the GroupNorm repair)."""
    model = ppvit.create_model("conv2former_n_cifar", num_classes=10, depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))
    model.eval()
    info = export_model(model, str(tmp_path / "c2f"), 32, backends=["onnxruntime"], bench_batch_size=4)
    assert info["backends"]["onnxruntime"]["verified"], info["backends"]["onnxruntime"]
    x = np.random.rand(4, 3, 32, 32).astype("float32") * 50  # large activations: a tiny epsilon NaNs here
    out = Predictor(str(tmp_path / "c2f"), device="cpu", backend="onnxruntime")(x)
    assert np.isfinite(out).all() and np.abs(out - _dygraph(model, x)).max() <= 1e-4 * max(1, np.abs(out).max())


def test_group_norm_epsilon_is_repaired_in_onnx(tmp_path):
    """paddle2onnx reads group_norm's (float64) epsilon as garbage; the ONNX InstanceNormalization gets the
    program's value back, and ONNX Runtime matches dygraph on large activations."""
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3, padding=1), paddle.nn.GroupNorm(2, 8, epsilon=1e-5),
                                 paddle.nn.GELU(), paddle.nn.Conv2D(8, 8, 2, stride=2), paddle.nn.GroupNorm(1, 8),
                                 paddle.nn.AdaptiveAvgPool2D(1), paddle.nn.Flatten(), paddle.nn.Linear(8, 5))
    model.eval()
    info = export_model(model, str(tmp_path / "gn"), 16, backends=["onnxruntime"], bench_batch_size=4)
    assert info["backends"]["onnxruntime"]["verified"], info["backends"]["onnxruntime"]
    import onnx

    eps = [a.f for n in onnx.load(str(tmp_path / "gn.onnx")).graph.node if n.op_type == "InstanceNormalization"
           for a in n.attribute if a.name == "epsilon"]
    assert len(eps) == 2 and all(e == pytest.approx(1e-5) for e in eps), eps
    x = np.random.rand(4, 3, 16, 16).astype("float32") * 50
    out = Predictor(str(tmp_path / "gn"), device="cpu", backend="onnxruntime")(x)
    assert np.isfinite(out).all() and np.abs(out - _dygraph(model, x)).max() <= 1e-4 * max(1, np.abs(out).max())


