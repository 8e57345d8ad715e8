"""Converting official PyTorch checkpoints: tools/convert_weights.py, ``ppvit convert`` and
ppvit.commands.convert (readers in ppvit.io.torch_checkpoint).

Fixtures (tests/fixtures, made by scripts/make_fixtures_*.py with torch; read here with numpy only): each
family's reduced model in its official PyTorch layout, as ``.npz`` (state under PyTorch keys, build
arguments, input ``x``, PyTorch's eval output ``y``) and as the ``.pth`` written by ``torch.save``.
"""
import logging
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import paddle
import pytest

import ppvit
from ppvit.commands.convert import ConversionError, build_model, convert_checkpoint, convert_state_dict
from ppvit.io import compare_state_dict
from ppvit.io.torch_checkpoint import read_checkpoint, read_torch_legacy, read_torch_zip
from tests.conftest import FIXTURES, ROOT

TOOL = os.path.join(ROOT, "tools", "convert_weights.py")
_ACTS = {"gelu": paddle.nn.GELU, "relu": paddle.nn.ReLU}


def _fixture(name):
    """(PyTorch state, build config, x, y) of a fixture; the families' scripts use two prefix styles."""
    data = np.load(os.path.join(FIXTURES, name + ".npz"))
    sp, cp = ("param/", "cfg/") if any(k.startswith("param/") for k in data.files) else ("state/", "config/")
    state = {k[len(sp):]: data[k] for k in data.files if k.startswith(sp)}
    cfg = {k[len(cp):]: data[k].tolist() for k in data.files if k.startswith(cp)}
    return state, cfg, data["x"], data["y"]


def _convit_kwargs(cfg):
    assert cfg["num_heads"] == 4  # convit_tiny's own
    return {k: cfg[k] for k in ("img_size", "patch_size", "embed_dim", "depth", "local_up_to_layer")}


def _dilateformer_kwargs(cfg):
    return {k: cfg[k] for k in ("img_size", "embed_dim", "depths", "num_heads")}


def _conv2former_kwargs(cfg):
    return {k: cfg[k] for k in ("dims", "depths", "kernel_size", "head_dim")}


def _coatnet_kwargs(cfg):
    return {"img_size": cfg["image_size"], **{k: cfg[k] for k in ("num_blocks", "channels")}}


def _convmixer_kwargs(cfg):
    kw = {k: cfg[k] for k in ("dim", "depth", "kernel_size", "patch_size")}
    kw["act_layer"] = _ACTS[str(cfg["act"]).lower()]
    return kw


# fixture -> (registered model, build kwargs from the fixture's config); the class count is not passed:
# the converter reads it from the checkpoint's head
FAMILIES = {
    "convit_official_tiny": ("convit_tiny", _convit_kwargs),  # facebookresearch/convit == timm keys
    "dilateformer_official_tiny": ("dilateformer_t", _dilateformer_kwargs),  # JIAOJIAYUASD/dilateformer
    "conv2former_tiny": ("conv2former_n", _conv2former_kwargs),  # HVision-NKU/Conv2Former
    "coatnet_tiny64": ("coatnet_0", _coatnet_kwargs),  # 003's PyTorch CoAtNet
    "convmixer_flat_gelu": ("convmixer_1536_20", _convmixer_kwargs),  # locuslab flat Sequential
}


def _to_safetensors(state, path):
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, path)
    return path


def _max_diff_after_loading(model_name, dst, kwargs, x, y):
    """Load the converted file the way a user does (create_model(pretrained=...)) and compare outputs."""
    model = ppvit.create_model(model_name, pretrained=dst, num_classes=y.shape[1], **kwargs)
    model.eval()
    with paddle.no_grad():
        got = model(paddle.to_tensor(x)).numpy()
    assert got.shape == y.shape
    return float(np.abs(got - y).max())


# ---------------------------------------------------------------------------------------------- reading
def _npz_state(name):
    return {k[len("state/"):]: v for k, v in np.load(os.path.join(FIXTURES, name + ".npz")).items()
            if k.startswith("state/")}


@pytest.mark.parametrize("pth", [f"{n}.pth" for n in FAMILIES] + [
    "convmixer_flat_gelu_legacy.pth", "deit_style_checkpoint.pth", "deit_style_checkpoint_legacy.pth"])
def test_builtin_reader_matches_torch_save(pth):
    # each .pth was written by torch.save (zip or legacy format) from the same tensors as its .npz:
    # same keys in the same order, dtypes, shapes and values
    name = pth[:-len(".pth")].replace("_legacy", "")
    state = _fixture(name)[0] if name in FAMILIES else _npz_state(name)
    got = read_checkpoint(os.path.join(FIXTURES, pth))
    assert list(got) == list(state)
    for k, v in state.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v, err_msg=k)


@pytest.mark.parametrize("read, pth", [(read_torch_zip, "deit_style_checkpoint.pth"),
                                       (read_torch_legacy, "deit_style_checkpoint_legacy.pth")])
def test_reader_unwraps_training_checkpoint_without_running_code(read, pth):
    # a DeiT-style main.py checkpoint: weights under "model", an argparse.Namespace and optimizer state
    # beside them. The Namespace is not imported, only stood in for.
    raw = read(os.path.join(FIXTURES, pth))
    assert set(raw) == {"model", "optimizer", "lr_scheduler", "epoch", "args"}
    assert raw["epoch"] == 3
    assert type(raw["args"]).__name__ == "argparse.Namespace"
    assert raw["args"]["__state__"]["input_size"] == 224
    assert "argparse" not in type(raw["args"]).__module__
    # AdamW moments are tensors too
    assert raw["optimizer"]["state"][0]["exp_avg"].shape == (4, 3)


def test_reader_refuses_to_run_code_in_a_malicious_pth(tmp_path):
    # a zip that looks like torch.save output but whose pickle calls os.system: the builtin reader rebuilds
    # only tensors and containers, so the call never happens
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps({"weight": Evil()}, protocol=2)
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", payload)
        zf.writestr("archive/version", "3\n")
    with pytest.raises(ConversionError, match="holds no tensors"):
        read_checkpoint(str(path))
    assert not marker.exists()


def test_bfloat16_safetensors_are_widened(tmp_path):
    # hub files are sometimes bfloat16, which numpy (and safetensors.numpy) cannot hold: read as float32
    import json
    import struct

    state = _fixture("convit_official_tiny")[0]
    header, chunks, offset = {}, [], 0
    for k, v in state.items():
        raw = (v.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()  # bf16 = upper half of f32
        header[k] = {"dtype": "BF16", "shape": list(v.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    blob = json.dumps(header).encode()
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + b"".join(chunks))
    got = read_checkpoint(str(path))
    for k, v in state.items():
        assert got[k].dtype == np.float32 and got[k].shape == v.shape
        expected = (v.astype("<f4").view("<u4") & 0xFFFF0000).view("<f4")
        np.testing.assert_array_equal(got[k], expected, err_msg=k)


def test_reader_refuses_tensor_data_shorter_than_its_shape(tmp_path):
    # a storage cut short inside an intact zip: refused, never read past its end
    src = zipfile.ZipFile(os.path.join(FIXTURES, "convmixer_flat_gelu.pth"))
    path = tmp_path / "short.pth"
    with zipfile.ZipFile(path, "w") as out:
        for info in src.infolist():
            data = src.read(info.filename)
            out.writestr(info.filename, data[:8] if info.filename.endswith("/data/0") else data)
    with pytest.raises(ConversionError, match="outside its storage"):
        read_checkpoint(str(path))


@pytest.mark.parametrize("pth", ["dilateformer_official_tiny.pth", "convmixer_flat_gelu_legacy.pth"])
def test_torch_reader_agrees_with_builtin(pth):
    pytest.importorskip("torch")  # only where torch is installed (not in CI)
    path = os.path.join(FIXTURES, pth)
    a, b = read_checkpoint(path, reader="torch"), read_checkpoint(path, reader="builtin")
    assert list(a) == list(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


# ------------------------------------------------------------------------------------------- conversion
@pytest.mark.parametrize("source", ["pth", "safetensors"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_official_layout_converts_and_reproduces_pytorch(name, source, tmp_path):
    model_name, make_kwargs = FAMILIES[name]
    state, cfg, x, y = _fixture(name)
    kwargs = make_kwargs(cfg)
    if source == "pth":
        src, dst = os.path.join(FIXTURES, name + ".pth"), str(tmp_path / "w.pdparams")
    else:
        src, dst = _to_safetensors(state, str(tmp_path / "torch.safetensors")), str(tmp_path / "w.safetensors")
    model = convert_checkpoint(model_name, src, dst, **kwargs)
    assert model.num_classes == y.shape[1]  # read from the checkpoint's head
    diff = _max_diff_after_loading(model_name, dst, kwargs, x, y)
    assert diff <= 1e-4, f"{name} from .{source}: max abs difference to PyTorch {diff}"


@pytest.mark.parametrize("model_name", ["convit_tiny", "dilateformer_t"])
def test_key_maps_cover_full_size_official_checkpoints(model_name):
    # keys/shapes of the full-size official models (ImageNet, 1000 classes; written by the fixture script
    # from the transcribed official code): they map onto the registered model with nothing left over
    import json

    with open(os.path.join(FIXTURES, "official_key_shapes.json")) as f:
        shapes = json.load(f)[model_name]
    torch_state = {k: np.zeros(v, "float32") for k, v in shapes.items()}
    state = convert_state_dict(model_name, torch_state)
    model = build_model(model_name, state)
    assert model.num_classes == 1000
    diff = compare_state_dict(model.state_dict(), state)
    assert not diff, diff


def test_legacy_format_converts(tmp_path):
    # a torch < 1.6 file, read without torch
    state, cfg, x, y = _fixture("convmixer_flat_gelu")
    kwargs = _convmixer_kwargs(cfg)
    dst = str(tmp_path / "w.safetensors")
    src = os.path.join(FIXTURES, "convmixer_flat_gelu_legacy.pth")
    convert_checkpoint("convmixer_1536_20", src, dst, **kwargs)
    assert _max_diff_after_loading("convmixer_1536_20", dst, kwargs, x, y) <= 1e-4


def test_convmixer_timm_layout_converts(tmp_path):
    state, cfg, x, y = _fixture("convmixer_timm_relu")
    kwargs = _convmixer_kwargs(cfg)
    src = _to_safetensors({"module." + k: v for k, v in state.items()}, str(tmp_path / "timm.safetensors"))
    dst = str(tmp_path / "w.safetensors")
    convert_checkpoint("convmixer_768_32", src, dst, **kwargs)
    assert _max_diff_after_loading("convmixer_768_32", dst, kwargs, x, y) <= 1e-4


def test_converted_pdparams_is_a_plain_paddle_state_dict(tmp_path):
    # what users do with a .pdparams without ppvit's loader: paddle.load + set_state_dict
    model_name, make_kwargs = FAMILIES["convit_official_tiny"]
    state, cfg, x, y = _fixture("convit_official_tiny")
    dst = str(tmp_path / "w.pdparams")
    convert_checkpoint(model_name, os.path.join(FIXTURES, "convit_official_tiny.pth"), dst, **make_kwargs(cfg))
    loaded = paddle.load(dst)
    model = ppvit.create_model(model_name, num_classes=y.shape[1], **make_kwargs(cfg))
    assert set(loaded) == set(model.state_dict())
    # Linear weights transposed, nothing else touched
    qk = "blocks.0.attn.qk.weight"
    np.testing.assert_array_equal(np.asarray(loaded[qk]), state[qk].T)
    np.testing.assert_array_equal(np.asarray(loaded["pos_embed"]), state["pos_embed"])


# ------------------------------------------------------------------------------------------ refusals
def _run_tool(*args):
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, TOOL, *args], capture_output=True, text=True, env=env, timeout=300)


def test_tool_refuses_wrong_family_listing_keys(tmp_path):
    state, cfg, _, _ = _fixture("convit_official_tiny")
    dst = tmp_path / "out.pdparams"
    r = _run_tool("--model", "dilateformer_t", "--src", os.path.join(FIXTURES, "convit_official_tiny.pth"),
                  "--dst", str(dst), "--model-arg", "img_size=64", "--model-arg", "embed_dim=6",
                  "--model-arg", "depths=[1,1,1,1]", "--model-arg", "num_heads=[3,3,3,6]")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    # one short line: the counts and a few keys of each kind, not a hundred names
    assert "does not hold dilateformer_t weights: 90 of 94 model keys missing, 3 of another shape, 45 unexpected" \
        in r.stderr, r.stderr
    assert "missing patch_embed.proj.0.weight" in r.stderr  # a DilateFormer key the source lacks
    assert "unexpected cls_token" in r.stderr  # a ConViT key the model lacks
    assert len(r.stderr.strip()) < 500 and "official layout" in r.stderr
    assert not dst.exists()


def test_tool_refuses_truncated_sources_and_keeps_dst(tmp_path):
    # (1) a .pth cut in half, (2) a .safetensors missing one block: both exit 2, dst keeps its content
    dst = tmp_path / "existing.safetensors"
    dst.write_bytes(b"previous weights")
    whole = open(os.path.join(FIXTURES, "convit_official_tiny.pth"), "rb").read()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole[: len(whole) // 2])
    state, cfg, _, _ = _fixture("convit_official_tiny")
    model_args = []
    for k, v in _convit_kwargs(cfg).items():
        model_args += ["--model-arg", f"{k}={v}"]

    r = _run_tool("--model", "convit_tiny", "--src", str(cut), "--dst", str(dst), *model_args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and "truncated" in r.stderr

    partial = {k: v for k, v in state.items() if not k.startswith("blocks.2.")}
    src = _to_safetensors(partial, str(tmp_path / "partial.safetensors"))
    r = _run_tool("--model", "convit_tiny", "--src", src, "--dst", str(dst), *model_args)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    n_block = sum(k.startswith("blocks.2.") for k in state)
    assert f"{n_block} of " in r.stderr and " model keys missing (e.g. missing blocks.2.norm1.weight, " in r.stderr, \
        r.stderr
    assert "unexpected" not in r.stderr, r.stderr
    assert dst.read_bytes() == b"previous weights"


def test_shape_mismatch_is_listed(tmp_path):
    state, cfg, _, _ = _fixture("convit_official_tiny")
    kwargs = _convit_kwargs(cfg)
    kwargs["embed_dim"] = 12  # a wider model than the checkpoint
    src = _to_safetensors(state, str(tmp_path / "s.safetensors"))
    with pytest.raises(ConversionError, match=r"42 of 49 model keys of another shape \(e\.g\. .*pos_embed: "
                                              r"checkpoint \(1, 16, 32\) vs model \(1, 16, 48\)"):
        convert_checkpoint("convit_tiny", src, str(tmp_path / "o.pdparams"), **kwargs)
    assert not (tmp_path / "o.pdparams").exists()


def test_tool_user_errors_exit_2(tmp_path, capsys):
    from ppvit.commands.cli import main  # what tools/convert_weights.py and `ppvit convert` run

    src = os.path.join(FIXTURES, "convit_official_tiny.pth")
    cases = [
        (["--model", "convit_tiy", "--src", src, "--dst", str(tmp_path / "a.pdparams")], "convit_tiny"),
        (["--model", "convit_tiny", "--src", src, "--dst", str(tmp_path / "a.pt")], ".pdparams or .safetensors"),
        (["--model", "convit_tiny", "--src", str(tmp_path / "nope.pth"), "--dst", str(tmp_path / "a.pdparams")],
         "not found"),
    ]
    for argv, expected in cases:
        assert main(["convert"] + argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and expected in err, err
    assert not any(p.name.startswith("a.") for p in tmp_path.iterdir())


# ------------------------------------------------------------------------------------------ fine-tuning
@pytest.fixture
def converted_convit(tmp_path):
    """convit_official_tiny converted to .safetensors (7 classes), with its build kwargs."""
    state, cfg, _, _ = _fixture("convit_official_tiny")
    kwargs = _convit_kwargs(cfg)
    dst = str(tmp_path / "convit_tiny_converted.safetensors")
    convert_checkpoint("convit_tiny", os.path.join(FIXTURES, "convit_official_tiny.pth"), dst, **kwargs)
    return dst, kwargs


def test_finetune_other_class_count_loads_all_but_head(converted_convit, caplog):
    dst, kwargs = converted_convit
    from safetensors.numpy import load_file

    saved = load_file(dst)
    with caplog.at_level(logging.INFO, logger="ppvit"):
        model = ppvit.create_model("convit_tiny", pretrained=dst, num_classes=3, **kwargs)
    own = {k: v.numpy() for k, v in model.state_dict().items()}
    assert set(own) == set(saved)
    body = [k for k in own if not k.startswith("head.")]
    assert len(body) == len(own) - 2
    for k in body:  # every non-head weight, by value
        np.testing.assert_array_equal(own[k], saved[k], err_msg=k)
    # the head is fresh: 3 classes, ViT init (zero bias, small trunc-normal weights), not the checkpoint's
    assert own["head.weight"].shape == (saved["head.weight"].shape[0], 3)
    np.testing.assert_array_equal(own["head.bias"], np.zeros(3, "float32"))
    assert 0.01 < own["head.weight"].std() < 0.03  # trunc-normal(std .02), not the converted scale
    assert any("re-initialised" in r.getMessage() and "head" in r.getMessage() for r in caplog.records)


def test_train_tool_finetunes_from_converted_checkpoint(converted_convit, tmp_path):
    dst, kwargs = converted_convit
    train = os.path.join(ROOT, "tools", "train.py")
    if not os.path.exists(train):
        pytest.skip("tools/train.py not there yet")
    overrides = [f"Global.pretrained_model={dst}", f"Global.output_dir={tmp_path / 'out'}", "Global.epochs=1",
                 "Global.device=cpu", "Global.print_interval=1", "Data.dataset=digits",
                 f"Data.data_file={tmp_path / 'digits.tar.gz'}", "Data.limit=8", "Data.batch_size=4",
                 "Data.eval_batch_size=8", "Data.num_workers=0", "Data.transform=basic",
                 "Optimizer.warmup_epochs=0"]
    overrides += [f"Arch.{k}={v}" for k, v in kwargs.items()]
    cmd = [sys.executable, train, "-c", os.path.join(ROOT, "configs", "convit_tiny_ft.yaml")]
    for o in overrides:
        cmd += ["-o", o]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(tmp_path),
                       env=dict(os.environ, PYTHONWARNINGS="ignore"))
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "re-initialised" in out and "head" in out  # 7-class checkpoint head -> fresh 10-class head
    run = tmp_path / "out" / "convit_tiny_ft"
    assert (run / "final_model.pdparams").exists()
    final = paddle.load(str(run / "final_model.pdparams"))
    assert list(np.asarray(final["head.weight"]).shape) == [kwargs["embed_dim"] * 4, 10]
