"""Config loading (-c/-o, schema, defaults) and the per-step learning-rate schedules."""
import glob
import math
import os

import numpy as np
import paddle
import pytest

from ppvit.engine.config import ConfigError, load_config, model_kwargs, run_dir
from ppvit.engine.optim import StepSchedule, build_optimizer, build_scheduler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs")
QUICKSTART = os.path.join(CONFIGS, "quickstart.yaml")


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(CONFIGS, "*.yaml"))),
                         ids=lambda p: os.path.basename(p))
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert cfg["Global"]["run_name"] == os.path.splitext(os.path.basename(path))[0]
    for key in ("device", "seed", "epochs", "output_dir", "pretrained_model", "checkpoints"):
        assert key in cfg["Global"]
    for key in ("dataset", "data_file", "batch_size", "eval_batch_size", "num_workers", "limit"):
        assert key in cfg["Data"]


def test_overrides_are_typed_and_repeatable():
    cfg = load_config(QUICKSTART, ["Global.epochs=3", "Optimizer.lr=2e-3", "Data.limit=64", "Data.limit=32",
                                   "Global.pretrained_model=null", "Arch.depth=2", "Arch.kernel_size=3"])
    assert cfg["Global"]["epochs"] == 3 and isinstance(cfg["Global"]["epochs"], int)
    assert cfg["Optimizer"]["lr"] == pytest.approx(2e-3)
    assert cfg["Data"]["limit"] == 32  # the last -o wins
    assert cfg["Global"]["pretrained_model"] is None
    assert model_kwargs(cfg)["depth"] == 2 and model_kwargs(cfg)["kernel_size"] == 3


def test_defaults_fill_and_ints_promote_to_float():
    cfg = load_config(None, base={"Global": {"epochs": 1}, "Arch": {"name": "convmixer_256_8", "num_classes": 10},
                                  "Optimizer": {"lr": 1}, "Data": {"batch_size": 2, "eval_batch_size": 2}})
    assert cfg["Optimizer"]["lr"] == 1.0 and isinstance(cfg["Optimizer"]["lr"], float)
    assert cfg["Global"]["device"] == "auto" and cfg["Global"]["seed"] == 42
    assert cfg["Loss"]["name"] == "CrossEntropy" and cfg["Optimizer"]["scheduler"] == "cosine"
    assert cfg["Data"]["dataset"] == "cifar10" and cfg["Data"]["limit"] is None
    assert run_dir(cfg) == os.path.join("./output", "convmixer_256_8")


@pytest.mark.parametrize("overrides, words", [
    (["Global.epoch=3"], ["Global.epoch", "did you mean epochs", "accepted keys of Global"]),
    (["Globl.epochs=3"], ["unknown section", "Globl", "Global, Arch, Loss, Optimizer, Data"]),
    (["Global.epochs=ten"], ["Global.epochs", "must be int", "'ten'"]),
    (["Global.epochs=2.5"], ["Global.epochs", "must be int"]),
    (["Global.epochs=0"], ["Global.epochs", "> 0"]),
    (["Global.device=tpu"], ["Global.device", "auto, gpu, cpu"]),
    (["Global.use_amp=1"], ["Global.use_amp", "bool"]),
    (["Optimizer.name=Adagrad"], ["Optimizer.name", "Adam, AdamW, SGD"]),
    (["Loss.smoothing=1.5"], ["Loss.smoothing", "[0, 1)"]),
    (["Data.dataset=mnist"], ["Data.dataset", "cifar10, digits"]),
    (["Arch.name=convmixr_256_8"], ["Arch.name", "convmixer_256_8", "Registered models"]),
    (["Global.epochs"], ["Section.key=value"]),
    (["epochs=3"], ["Section.key"]),
    (["Data.limit=[1"], ["not valid YAML"]),
])
def test_bad_values_name_the_key(overrides, words):
    with pytest.raises(ConfigError) as info:
        load_config(QUICKSTART, overrides)
    for word in words:
        assert word in str(info.value), str(info.value)


def test_missing_required_key_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="missing required key Optimizer.lr"):
        load_config(None, base={"Global": {"epochs": 1}, "Arch": {"name": "convmixer_256_8", "num_classes": 10},
                                "Data": {"batch_size": 2, "eval_batch_size": 2}})
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert str(info.value) == f"config file not found: {tmp_path / 'nope.yaml'}"  # no YAML file is close
    bad = tmp_path / "bad.yaml"
    bad.write_text("Global:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_config(scalar)


def _lrs(schedule, n):
    out = []
    for _ in range(n):
        out.append(schedule())  # last_lr: the rate the optimizer uses at this step
        schedule.step()
    return np.array(out)


def test_cosine_matches_the_notebooks_paddle_scheduler():
    """The notebooks' CosineAnnealingDecay(T_max=steps_per_epoch * epochs), stepped per batch."""
    spe, epochs, lr = 7, 3, 1e-3
    ours = _lrs(StepSchedule(lr, "cosine", spe * epochs, spe, epochs), spe * epochs)
    ref = _lrs(paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=lr, T_max=spe * epochs), spe * epochs)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-12)


def test_warmup_constant_and_onecycle():
    warm = _lrs(StepSchedule(1.0, "cosine", 20, 10, 2, warmup_steps=5), 20)
    np.testing.assert_allclose(warm[:5], [0.2, 0.4, 0.6, 0.8, 1.0])
    assert np.all(np.diff(warm[5:]) < 0) and warm[5] == pytest.approx(1.0)
    assert _lrs(StepSchedule(0.5, "constant", 20, 10, 2), 20).tolist() == [0.5] * 20
    # locuslab: interp(epoch + (i+1)/steps, [0, 2E//5, 4E//5, E], [0, lr, lr/20, 0]) with E = 25
    spe, e = 4, 25
    lrs = _lrs(StepSchedule(0.05, "onecycle", spe * e, spe, e), spe * e)
    t = (np.arange(spe * e) + 1) / spe
    np.testing.assert_allclose(lrs, np.interp(t, [0, 10, 20, 25], [0, 0.05, 0.0025, 0]), atol=1e-12)
    assert lrs[-1] == 0.0 and lrs.max() == pytest.approx(0.05)


def test_schedule_state_resumes_on_the_same_curve():
    cfg = load_config(QUICKSTART, ["Optimizer.scheduler=cosine", "Optimizer.warmup_epochs=0.5"])
    a = build_scheduler(cfg["Optimizer"], steps_per_epoch=6, epochs=3)
    first = _lrs(a, 7)
    b = build_scheduler(cfg["Optimizer"], steps_per_epoch=6, epochs=3)
    b.set_state_dict(a.state_dict())
    full = _lrs(build_scheduler(cfg["Optimizer"], 6, 3), 18)
    np.testing.assert_allclose(np.concatenate([first, _lrs(b, 11)]), full)
    assert math.isclose(full[2], cfg["Optimizer"]["lr"])  # 3 warmup steps reach the base lr


def test_adamw_skips_no_weight_decay_params():
    class Tiny(paddle.nn.Layer):
        def __init__(self):
            super().__init__()
            self.fc = paddle.nn.Linear(2, 2)
            self.pos_embed = self.create_parameter([1, 2])

        def no_weight_decay(self):
            return {"pos_embed"}

    model = Tiny()
    cfg = load_config(QUICKSTART, ["Optimizer.name=AdamW", "Optimizer.weight_decay=0.5"])
    sched = build_scheduler(cfg["Optimizer"], 1, 1)
    opt = build_optimizer(cfg["Optimizer"], model, sched)
    assert not opt._apply_decay_param_fun(model.pos_embed.name)
    assert opt._apply_decay_param_fun(model.fc.weight.name)


# ---------------------------------------------------------------------------------------- the input size
def _minimal(arch, data=None):
    return {"Global": {"epochs": 1}, "Arch": dict(arch, num_classes=10), "Optimizer": {"lr": 0.1},
            "Data": dict({"batch_size": 2, "eval_batch_size": 2}, **(data or {}))}


@pytest.mark.parametrize("name, size", [("convmixer_256_8", 32), ("conv2former_n_cifar", 32), ("convit_tiny", 224),
                                        ("coatnet_0", 224)])
def test_arch_img_size_defaults_to_the_model_cfg_and_drives_the_data(name, size):
    import ppvit

    cfg = load_config(None, base=_minimal({"name": name}))
    assert cfg["Arch"]["img_size"] == size == ppvit.get_model_cfg(name).input_size[1]
    assert model_kwargs(cfg)["img_size"] == size  # the model is built for it
    assert "image_size" not in cfg["Data"]  # one key: the pipelines read Arch.img_size
    cfg = load_config(None, ["Arch.img_size=64"], base=_minimal({"name": name}))
    assert cfg["Arch"]["img_size"] == 64


def test_data_image_size_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as err:
        load_config(QUICKSTART, ["Data.image_size=24"])
    msg = str(err.value)
    assert "Data.image_size" in msg and "Arch.img_size" in msg and "-o Arch.img_size=24" in msg


def test_arch_image_size_is_the_old_spelling_of_img_size():
    cfg = load_config(None, base=_minimal({"name": "coatnet_0", "image_size": 64}))
    assert cfg["Arch"]["img_size"] == 64 and "image_size" not in cfg["Arch"]
    with pytest.raises(ConfigError, match="Arch: got both image_size= and img_size="):
        load_config(None, base=_minimal({"name": "coatnet_0", "image_size": 64, "img_size": 64}))


def test_a_dumped_config_loads_again(tmp_path):
    from ppvit.engine.config import dump

    cfg = load_config(QUICKSTART, ["Arch.img_size=24"])
    path = tmp_path / "config.yaml"
    path.write_text(dump(cfg))
    again = load_config(str(path))
    assert again["Arch"]["img_size"] == 24
    assert again == cfg


def test_a_missing_config_file_suggests_the_near_miss(tmp_path, monkeypatch):
    """``-c configs/quickstart.yml`` (or a typo, or the name without its folder): the closest YAML file of the
    same folder, else of its configs/ folder, as the -o key suggestions do; none when nothing is close."""
    (tmp_path / "configs").mkdir()
    for name in ("quickstart.yaml", "folder_demo.yaml"):
        (tmp_path / "configs" / name).write_text("Global: {}\n")
    (tmp_path / "configs" / "notes.txt").write_text("")
    monkeypatch.chdir(tmp_path)
    for given, meant in [("configs/quickstart.yml", "configs/quickstart.yaml"),
                         ("configs/quikstart.yaml", "configs/quickstart.yaml"),
                         ("configs/Folder_Demo.yaml", "configs/folder_demo.yaml"),
                         ("quickstart.yaml", "configs/quickstart.yaml"),
                         ("configs/resnet50.yaml", None), ("nowhere/quickstart.yaml", None)]:
        with pytest.raises(ConfigError) as info:
            load_config(given)
        hint = f"; did you mean {meant}?" if meant else ""
        assert str(info.value) == f"config file not found: {given}{hint}", str(info.value)
