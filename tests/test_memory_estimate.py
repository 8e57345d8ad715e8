"""Before a CPU run trains, its peak memory is estimated (one forward/backward at batch 1 and 2, scaled) and a run
that would exceed the available RAM is announced, with the batch size that fits."""
import re

import pytest

from ppvit.engine import Engine, load_config, memory

from runs import TINY

# a ConvMixer at width 64 on 32x32 inputs: a few MiB of activations per image, so the batch matters
WIDE = ["Arch.dim=64", "Arch.depth=4", "Arch.img_size=32", "Data.batch_size=32", "Data.limit=32", "Global.epochs=1"]


@pytest.fixture(autouse=True)
def _no_curves(monkeypatch):
    """The learning curves take most of a one-step run's time and are not what is tested here."""
    monkeypatch.setattr("ppvit.engine.trainer.plot_learning_curve", lambda *a, **k: None)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return Engine(load_config(None, [f"Global.output_dir={tmp_path_factory.mktemp('mem')}"] + WIDE, base=TINY))


def test_the_estimate_matches_a_real_training_step(engine):
    est = memory.estimate_peak(engine.model, engine.loss_fn, tuple(engine.eval_set[0][0].shape), 32)
    assert est["per_image"] > 2**20  # > 1 MiB per 32x32 image at width 64
    images, labels = next(iter(engine.train_loader))
    with memory.PeakTensorBytes() as real:  # one real step at batch 32 (the weights are not saved anywhere)
        loss = engine.loss_fn(engine.model(images), labels.reshape([-1]).astype("int64"))
        loss.backward()
        engine.optimizer.step()  # creates Adam's moments
        engine.optimizer.clear_grad()
        del loss
    predicted = est["peak"] - est["rss"]
    assert 0.8 <= real.extra / predicted <= 1.25, (real.extra / 2**20, predicted / 2**20)


def test_a_run_beyond_the_available_ram_is_announced_with_the_batch_that_fits(tmp_path, monkeypatch, capsys):
    engine = Engine(load_config(None, [f"Global.output_dir={tmp_path}"] + WIDE, base=TINY))
    real_estimate, seen = memory.estimate_peak, []

    def estimate(*args):
        seen.append(real_estimate(*args))
        return seen[-1]

    monkeypatch.setattr(memory, "estimate_peak", estimate)
    # room for about half the batch of 32
    monkeypatch.setattr(memory, "available_ram", lambda: int(seen[-1]["fixed"] + 16.5 * seen[-1]["per_image"]))
    engine.train()
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("memory:")]
    assert len(lines) == 1, out[-3000:]
    assert "training at batch 32 needs about" in lines[0] and "GiB of RAM available" in lines[0], lines[0]
    fits = int(re.search(r"-o Data\.batch_size=(\d+)\)", lines[0]).group(1))
    assert fits == 16, lines[0]
    assert lines[0] in (tmp_path / "tiny" / "train.log").read_text()


def test_no_warning_when_the_run_fits(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(memory, "available_ram", lambda: 64 * memory.GIB)
    Engine(load_config(None, [f"Global.output_dir={tmp_path}"] + WIDE, base=TINY)).train()
    assert "memory:" not in capsys.readouterr().out
    assert "memory estimate: peak" in (tmp_path / "tiny" / "train.log").read_text()  # logged either way
