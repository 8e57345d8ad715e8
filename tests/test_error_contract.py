"""One error contract: a mistake the user can fix is one ``error:`` line and exit 2 (model arguments
included, checked when the config loads); a bug keeps its traceback; messages stand on their own line and
say what was saved; every tool says what it did; every file ppvit writes gets the same permissions."""
import os
import signal
import stat
import subprocess
import sys
import time

import numpy as np
import pytest

import ppvit
from ppvit.engine import ConfigError, load_config
from tests.runs import ROOT, TINY, ok, one_error, screen_lines, tool, write_config

ARCH_MISTAKES = [
    ("depth-not-int", "Arch.depth=abc", ["Arch.depth", "int", "'abc'"]),
    ("dim-float", "Arch.dim=1.5", ["Arch.dim", "int", "1.5"]),
    ("drop-path-word", "Arch.drop_path_rate=high", ["Arch.drop_path_rate", "float", "'high'"]),
    ("kernel-list", "Arch.kernel_size=[5]", ["Arch.kernel_size", "int"]),
    ("layer-from-config", "Arch.act_layer=relu", ["Arch.act_layer"]),
    ("unknown-argument", "Arch.dimm=32", ["Arch.dimm", "did you mean dim"]),
]


@pytest.mark.parametrize("override, words", [c[1:] for c in ARCH_MISTAKES], ids=[c[0] for c in ARCH_MISTAKES])
def test_model_arguments_are_checked_when_the_config_loads(tmp_path, override, words):
    config = write_config(tmp_path)
    with pytest.raises(ConfigError) as info:  # no model is built, no file read
        load_config(config, [override])
    for word in words:
        assert word in str(info.value), str(info.value)


def test_a_wrong_model_argument_is_one_line_and_exit_2(tmp_path):
    config = write_config(tmp_path)
    for name in ("train.py", "eval.py"):
        err = one_error(tool(name, config, [f"Global.output_dir={tmp_path / 'out'}", "Arch.depth=abc"]))
        assert "Arch.depth" in err and "'abc'" in err
    assert not os.path.exists(tmp_path / "out")


def test_valid_model_arguments_still_load(tmp_path):
    cfg = load_config(write_config(tmp_path), ["Arch.depth=3", "Arch.drop_path_rate=0", "Arch.kernel_size=3"])
    assert cfg["Arch"]["depth"] == 3 and cfg["Arch"]["drop_path_rate"] == 0
    cfg = load_config(None, [], base=dict(TINY, Arch={"name": "dilateformer_t", "num_classes": 10, "img_size": 64}))
    assert cfg["Arch"]["img_size"] == 64


@pytest.mark.parametrize("override", ["Global.output_dir=out # tmp", "Data.limit=8 # smoke", "Global.run_name= #x"])
def test_a_yaml_comment_in_an_override_is_refused_not_cut(tmp_path, override):
    config = write_config(tmp_path)
    with pytest.raises(ConfigError, match="#"):
        load_config(config, [override])
    err = one_error(tool("train.py", config, [override], cwd=tmp_path))
    assert "#" in err and "quote" in err, err
    assert sorted(os.listdir(tmp_path)) == ["tiny.yaml"]


def test_a_hash_inside_a_value_is_kept(tmp_path):
    config = write_config(tmp_path)
    assert load_config(config, ["Global.run_name=run#2"])["Global"]["run_name"] == "run#2"
    assert load_config(config, ['Global.output_dir="out # tmp"'])["Global"]["output_dir"] == "out # tmp"


BUGGY_TRAIN = """
import runpy, sys
import ppvit.{module} as m
original = m.{cls}.forward
def forward(self, *args):
    if self.training:
        raise ValueError("a bug inside ppvit")
    return original(self, *args)
m.{cls}.forward = forward
sys.path.insert(0, {tools!r})
runpy.run_path({train!r}, run_name="__main__")
"""


@pytest.mark.parametrize("module, cls", [("models.convmixer", "ConvMixer"), ("losses", "SoftTargetCrossEntropy")])
def test_a_bug_keeps_its_traceback(tmp_path, module, cls):
    """A ValueError raised by ppvit's own code (here: a model or the loss, patched to fail in training) is a
    bug, not a user mistake: it must not be reduced to one 'error:' line."""
    config = write_config(tmp_path)
    script = tmp_path / "buggy.py"
    script.write_text(BUGGY_TRAIN.format(module=module, cls=cls, train=os.path.join(ROOT, "tools", "train.py"),
                                          tools=os.path.join(ROOT, "tools")))
    proc = subprocess.run([sys.executable, str(script), "-c", config, "-o", f"Global.output_dir={tmp_path}/out"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT))
    assert proc.returncode not in (0, 2), proc.stderr[-2000:]
    assert "Traceback" in proc.stderr and "ValueError: a bug inside ppvit" in proc.stderr, proc.stderr[-3000:]


def _torch_layout_convmixer(path):
    """A small ConvMixer checkpoint in locuslab's PyTorch layout (same keys; Linear weights stored [out, in])."""
    from safetensors.numpy import save_file

    model = ppvit.create_model("convmixer_256_8", dim=16, depth=2)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    state["7.weight"] = np.ascontiguousarray(state["7.weight"].T)
    save_file(state, path)


def test_convert_weights_says_what_it_did(tmp_path):
    src, dst = str(tmp_path / "torch.safetensors"), str(tmp_path / "w.pdparams")
    _torch_layout_convmixer(src)
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "convert_weights.py"), "--model",
                           "convmixer_256_8", "--src", src, "--dst", dst, "--model-arg", "dim=16",
                           "--model-arg", "depth=2"], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    ok(proc)
    assert os.path.isfile(dst)
    assert "converted" in proc.stdout and dst in proc.stdout, (proc.stdout, proc.stderr)


def test_amp_on_the_cpu_is_dropped_with_one_warning(tmp_path):
    config = write_config(tmp_path)
    proc = ok(tool("train.py", config, [f"Global.output_dir={tmp_path}", "Global.epochs=1", "Global.use_amp=true"]))
    lines = [line for line in screen_lines(proc.stdout + "\n" + proc.stderr) if "use_amp" in line]
    assert len(lines) == 1 and "CPU" in lines[0], lines


def _ctrl_c_deliverable():
    """In the child before exec: SIGINT back to its default, so Python installs its KeyboardInterrupt handler
    even when this test run inherited SIGINT ignored (a shell's background job, nohup)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_interrupt_is_on_its_own_line_and_says_how_to_resume(tmp_path):
    config = write_config(tmp_path, dict(TINY, Data=dict(TINY["Data"], limit=None)))  # long enough to interrupt
    run = tmp_path / "out" / "tiny"
    args = [sys.executable, os.path.join(ROOT, "tools", "train.py"), "-c", config, "-o",
            f"Global.output_dir={tmp_path / 'out'}", "-o", "Global.save_interval=5", "-o", "Global.epochs=3"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"), preexec_fn=_ctrl_c_deliverable)
    deadline = time.time() + 200
    while time.time() < deadline and proc.poll() is None and not (run / "latest.pdstate").exists():
        time.sleep(0.1)
    time.sleep(0.5)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr
    shown = [line for line in screen_lines(stderr) if "interrupted" in line]
    assert len(shown) == 1 and shown[0].startswith("interrupted"), stderr[-2000:]
    assert str(run / "latest.pdstate") in shown[0] and "Global.checkpoints" in shown[0], shown[0]


INTERRUPTED_IN_PYLAYER = """
import runpy, signal, sys
import ppvit.kernels.pointwise as m
original = m._PointwiseConv.{method}
calls = [0]
def patched(ctx, *args):
    calls[0] += 1
    if calls[0] == {at}:
        signal.raise_signal(signal.SIGINT)  # Ctrl-C lands inside Paddle's C++, in a PyLayer {method}
    return original(ctx, *args)
m._PointwiseConv.{method} = staticmethod(patched)
sys.path.insert(0, {tools!r})
runpy.run_path({script!r}, run_name="__main__")
"""


@pytest.mark.parametrize("tool_name, method, at", [("train.py", "backward", 11), ("eval.py", "forward", 1)])
def test_interrupt_inside_a_pylayer_is_still_an_interrupt(tmp_path, tool_name, method, at):
    """Paddle re-raises a KeyboardInterrupt from inside a PyLayer (ppvit's hand-written 1x1 conv) as an OSError;
    Ctrl-C there must still end the command as an interrupt (exit 130, one line, no traceback), not as a crash.
    Deterministic: the patched PyLayer raises SIGINT itself. Training: on the 11th backward (the 4th step of a
    2-block ConvMixer, after the checkpoint of step 2; the memory estimate's two passes come first), and the line
    says how to resume from it; evaluation: on the first forward."""
    config = write_config(tmp_path)
    out = tmp_path / "out"
    if tool_name == "eval.py":
        ok(tool("train.py", config, [f"Global.output_dir={out}", "Global.epochs=1"]))
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED_IN_PYLAYER.format(method=method, at=at, tools=os.path.join(ROOT, "tools"),
                                                    script=os.path.join(ROOT, "tools", tool_name)))
    overrides = ["-o", f"Global.output_dir={out}"] + (["-o", "Global.save_interval=2"] if tool_name == "train.py" else [])
    proc = subprocess.run([sys.executable, str(script), "-c", config] + overrides, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=ROOT),
                          preexec_fn=_ctrl_c_deliverable)
    assert proc.returncode == 130, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    shown = [line for line in screen_lines(proc.stderr) if "interrupted" in line]
    assert len(shown) == 1 and shown[0].startswith("interrupted"), proc.stderr[-2000:]
    if tool_name == "train.py":
        assert str(out / "tiny" / "latest.pdstate") in shown[0] and "step 2" in shown[0], shown[0]


def test_ctrl_c_watch_notes_the_interrupt_shares_an_outer_watch_and_restores_the_handler():
    """The watch the ppvit command installs is shared by training's; both see a Ctrl-C; Python's default handler
    is back after stop; a host's own handler is left alone (and the watch then sees nothing)."""
    from ppvit.utils.interrupt import CtrlCWatch

    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a process started normally
    try:
        _watch_checks(CtrlCWatch)
    finally:
        signal.signal(signal.SIGINT, inherited)


def _watch_checks(CtrlCWatch):
    with CtrlCWatch() as outer:
        inner = CtrlCWatch().start()
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
            time.sleep(0.1)  # the Python-level handler runs between bytecodes
        assert outer.seen and inner.seen
        inner.stop()
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler  # the outer one is still on
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    hits = []
    signal.signal(signal.SIGINT, lambda *a: hits.append(1))
    with CtrlCWatch() as hosted:
        signal.raise_signal(signal.SIGINT)
        time.sleep(0.1)
    assert hits == [1] and not hosted.seen


def test_every_file_gets_the_same_permissions_and_every_tool_says_what_it_did(tmp_path):
    """Under umask 027 every file ppvit writes is 0640 and every folder 0750 (the atomic temp files
    included, which ``mkstemp`` creates 0600)."""
    config = write_config(tmp_path)
    out = tmp_path / "out"
    o = [f"Global.output_dir={out}", "Global.epochs=1"]
    images = tmp_path / "images"
    images.mkdir()
    import cv2

    cv2.imwrite(str(images / "a.png"), np.full((16, 16, 3), 99, np.uint8))
    old = os.umask(0o027)
    try:
        said = {}
        for name, extra, words in [
            ("train.py", [], ["outputs in"]),
            ("eval.py", [], ["eval.json"]),
            ("export.py", ["Export.onnx=false"], ["exported"]),
            ("infer.py", [f"Infer.images={images}"], ["infer.json"]),
            ("explain.py", ["Explain.num_samples=8"], ["explain"]),
        ]:
            said[name] = ok(tool(name, config, o + extra, cwd=tmp_path)).stdout
            for word in words:
                assert word in said[name], (name, said[name][-2000:])
    finally:
        os.umask(old)
    modes = {}
    for base, dirs, files in os.walk(out):
        for d in dirs:
            modes[os.path.join(base, d)] = stat.S_IMODE(os.stat(os.path.join(base, d)).st_mode)
        for f in files:
            modes[os.path.join(base, f)] = stat.S_IMODE(os.stat(os.path.join(base, f)).st_mode)
    wrong = {p: oct(m) for p, m in modes.items() if m != (0o750 if os.path.isdir(p) else 0o640)}
    assert not wrong, wrong
    assert any(p.endswith("inference.pdiparams") for p in modes) and any(p.endswith(".png") for p in modes)


def test_sync_bn_on_the_cpu_is_refused_with_the_reason(tmp_path):
    config = write_config(tmp_path)
    err = one_error(tool("train.py", config, [f"Global.output_dir={tmp_path / 'out'}", "Global.sync_bn=true"]))
    assert "Global.sync_bn" in err and "CPU" in err
    assert not os.path.exists(tmp_path / "out")


def test_a_missing_export_names_the_files_export_would_write_and_the_command(tmp_path):
    """Infer/Eval/Explain.model before any export: the error names the files tools/export.py writes for that path
    (``<folder>/inference.json``: export's Export.output is a folder), not ``<folder>.json`` alone, and the command
    that makes them (with Export.output when the path is not the run's default)."""
    config = write_config(tmp_path)
    out = tmp_path / "out"
    (tmp_path / "empty").mkdir()
    (tmp_path / "x.png").write_bytes(b"")  # Infer.images must exist (checked first); read only after the model
    default = os.path.join("out", "tiny", "inference")
    cases = [
        ("infer.py", ["Infer.images=x.png"],
         [f"Infer.model: no exported model at {default}: expected {default}/inference.json and "
          f"{default}/inference.pdiparams (the folder tools/export.py writes), or {default}.json and "
          f"{default}.pdiparams (a path prefix); make it with tools/export.py -c CONFIG"]),
        ("eval.py", ["Eval.model=deploy"],
         ["Eval.model: no exported model at deploy: expected deploy/inference.json and deploy/inference.pdiparams",
          "make it with tools/export.py -c CONFIG -o Export.output=deploy"]),
        ("explain.py", ["Explain.model=empty", "Explain.num_samples=8"],
         ["Explain.model: no exported model in the folder empty: expected empty/inference.json and "
          "empty/inference.pdiparams; make it with tools/export.py -c CONFIG -o Export.output=empty"]),
    ]
    for name, overrides, words in cases:
        err = one_error(tool(name, config, ["Global.output_dir=out"] + overrides, cwd=tmp_path))
        for word in words:
            assert word in err, err
        assert err.endswith(words[-1].split("; ")[-1]), err  # no Export.output for the default folder
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["empty", "tiny.yaml", "x.png"]


@pytest.mark.parametrize("name, key, extra", [("infer.py", "Infer.images", []),
                                              ("explain.py", "Explain.images", ["Explain.num_samples=8"])])
def test_a_wrong_image_path_names_the_key_and_what_to_give(tmp_path, name, key, extra):
    """A path that is neither a file nor a folder: the key, the path, 'no such file or folder' (it may have meant
    either) and the fix, before any model is read (no export or weights exist here) and with nothing written."""
    config = write_config(tmp_path)
    err = one_error(tool(name, config, ["Global.output_dir=out", f"{key}=my_images"] + extra, cwd=tmp_path))
    assert err == (f"error: {key}: my_images: no such file or folder; give image files and/or folders of images, "
                   f"e.g. -o {key}=photo.png or -o {key}=[a.png,images/]"), err
    if key == "Infer.images":  # and none at all (Explain falls back to test images): the same fix
        err = one_error(tool(name, config, ["Global.output_dir=out"] + extra, cwd=tmp_path))
        assert err == (f"error: {key} is not set: give image files and/or folders of images, "
                       f"e.g. -o {key}=photo.png or -o {key}=[a.png,images/]"), err
    assert sorted(os.listdir(tmp_path)) == ["tiny.yaml"]


def test_a_missing_config_file_is_one_line_with_the_near_miss():
    err = one_error(tool("train.py", os.path.join("configs", "quickstart.yml"), cwd=ROOT))
    assert err == "error: config file not found: configs/quickstart.yml; did you mean configs/quickstart.yaml?", err
