"""Every setting that has no effect under the others is refused, by one mechanism (``Key.only_when`` beside the
schema), with one line naming the key, the setting that decides and both ways out; ``-o '~Section.key'`` takes a
key out of a config."""
import glob
import os

import pytest

from ppvit.engine.config import SCHEMA, ConfigError, dump, load_config

from runs import ROOT

QUICKSTART = os.path.join(ROOT, "configs", "quickstart.yaml")  # AdamW, onecycle, CrossEntropy, no MixUp/CutMix
# for each key that has an effect only under some settings: overrides under which it has one
ENABLE = {
    "Optimizer.momentum": ["Optimizer.name=SGD"],
    "Optimizer.warmup_epochs": ["Optimizer.scheduler=cosine"],
    "Optimizer.eta_min": ["Optimizer.scheduler=cosine"],
    "Loss.smoothing": ["Loss.name=LabelSmoothingCrossEntropy"],
    "Data.split_seed": [],  # Data.val_split needs a folder dataset; the refusal alone is checked
    "Data.mix_prob": ["Data.mixup_alpha=0.2"],
    "Data.switch_prob": ["Data.mixup_alpha=0.2", "Data.cutmix_alpha=1.0"],
    "Eval.backend": ["Eval.use_predictor=true"],
    "Explain.backend": ["Explain.use_predictor=true"],
}


def _conditional_keys():
    return {f"{s}.{k}": spec for s, keys in SCHEMA.items() for k, spec in keys.items() if spec.only_when}


def _other_value(spec):
    """A valid value other than the key's default."""
    if spec.choices:
        return next(c for c in spec.choices if c != spec.default)
    if bool in spec.types:
        return not spec.default
    if float in spec.types:
        return 0.25 if spec.default in (None, 0.0, 1.0) else spec.default / 2
    return (spec.default or 0) + 1


def test_the_schema_declares_the_no_effect_keys_that_this_test_covers():
    assert set(_conditional_keys()) == set(ENABLE)


@pytest.mark.parametrize("name", sorted(ENABLE))
def test_a_key_set_where_it_has_no_effect_is_refused_in_one_line(name):
    spec = _conditional_keys()[name]
    cfg = load_config(QUICKSTART)
    assert not spec.only_when.test(cfg), f"{name} has an effect in the quick start config"
    value = _other_value(spec)
    with pytest.raises(ConfigError) as refused:
        load_config(QUICKSTART, [f"{name}={value}"])
    message = str(refused.value)
    assert message.startswith(f"{name}=") and "has no effect with" in message and "\n" not in message, message
    assert spec.only_when.how in message and f"remove {name} (-o '~{name}')" in message, message
    # its default, set explicitly, is harmless: not refused
    default = "null" if spec.default is None else spec.default
    load_config(QUICKSTART, [f"{name}={default}"])
    if ENABLE[name]:  # where it has an effect, the same value is accepted and kept
        cfg = load_config(QUICKSTART, ENABLE[name] + [f"{name}={value}"])
        section, key = name.split(".")
        assert cfg[section][key] == value and spec.only_when.test(cfg)


@pytest.mark.parametrize("case, overrides, words", [
    ("warmup with onecycle", ["Optimizer.warmup_epochs=2"], "with Optimizer.scheduler=onecycle"),
    ("eta_min with onecycle", ["Optimizer.eta_min=0.001"], "with Optimizer.scheduler=onecycle"),
    ("eta_min with constant", ["Optimizer.scheduler=constant", "Optimizer.eta_min=0.001"],
     "with Optimizer.scheduler=constant"),
    ("momentum with AdamW", ["Optimizer.momentum=0.8"], "with Optimizer.name=AdamW"),
    ("momentum with Adam", ["Optimizer.name=Adam", "Optimizer.momentum=0.8"], "with Optimizer.name=Adam"),
    ("mix_prob with mixing off", ["Data.mix_prob=0.5"], "no MixUp/CutMix"),
    ("switch_prob with MixUp alone", ["Data.mixup_alpha=0.2", "Data.switch_prob=0.3"], "Data.cutmix_alpha=0.0"),
    ("smoothing with CrossEntropy", ["Loss.smoothing=0.2"], "with Loss.name=CrossEntropy"),
])
def test_the_reported_cases(case, overrides, words):
    with pytest.raises(ConfigError) as refused:
        load_config(QUICKSTART, overrides)
    assert "has no effect with" in str(refused.value) and words in str(refused.value), str(refused.value)


def test_a_config_file_setting_is_refused_too(tmp_path):
    text = open(QUICKSTART, encoding="utf-8").read().replace("scheduler: onecycle",
                                                             "scheduler: onecycle\n  warmup_epochs: 3")
    path = tmp_path / "mine.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="Optimizer.warmup_epochs=3.0 has no effect"):
        load_config(str(path))
    cfg = load_config(str(path), ["~Optimizer.warmup_epochs"])  # the way out the message gives
    assert cfg["Optimizer"]["warmup_epochs"] == 0.0


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "*.yaml"))))
def test_every_shipped_config_and_its_saved_copy_load(path, tmp_path):
    cfg = load_config(path)
    saved = tmp_path / "config.yaml"
    saved.write_text(dump(cfg), encoding="utf-8")  # what a run writes: every key, defaults included
    assert load_config(str(saved)) == dict(cfg, Global=dict(cfg["Global"], run_name=cfg["Global"]["run_name"]))


def test_removing_a_key_on_the_command_line():
    cfg = load_config(QUICKSTART, ["Arch.name=coatnet_0", "~Arch.dim", "~Arch.depth"])  # ConvMixer-only keys out
    assert "dim" not in cfg["Arch"] and "depth" not in cfg["Arch"]
    assert load_config(QUICKSTART, ["~Optimizer.scheduler"])["Optimizer"]["scheduler"] == "cosine"  # the default
    with pytest.raises(ConfigError, match=r"Arch\.dimm is not set in .*quickstart\.yaml \(did you mean dim\?\)"):
        load_config(QUICKSTART, ["~Arch.dimm"])
    with pytest.raises(ConfigError, match="removing a key is ~Section.key"):
        load_config(QUICKSTART, ["~dim"])
