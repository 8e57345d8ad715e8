import json
import os

import numpy as np
import paddle
import pytest

import ppvit
from ppvit.io import (CheckpointError, atomic_path, compare_state_dict, load_state, save_state,
                      state_dict_mismatch_message, unwrap_state_dict, weights_mismatch_message,
                      write_json)


@pytest.mark.parametrize("ext", [".pdparams", ".safetensors"])
def test_round_trip(tmp_path, ext):
    state = {"a.weight": paddle.randn([3, 4]), "b": paddle.to_tensor(np.arange(5, dtype="int64"))}
    path = tmp_path / f"w{ext}"
    save_state(state, path)
    back = load_state(path)
    assert set(back) == set(state)
    for k in state:
        np.testing.assert_array_equal(back[k], state[k].numpy())
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp file left behind


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "w.pdparams"
    save_state({"x": paddle.ones([2])}, path)
    before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half a checkpoint")
            raise RuntimeError("killed mid-write")
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["w.pdparams"]


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_state(tmp_path / "nope.pdparams")
    full = tmp_path / "full.pdparams"
    save_state({"x": paddle.randn([64, 64])}, full)
    cut = tmp_path / "cut.pdparams"
    cut.write_bytes(full.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_state(cut)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_state(bad)


# ------------------------------------------------------------------------ the one state-dict comparison
def _model_and_bad_state():
    """A small model and a checkpoint that lacks one key, has one extra and one reshaped tensor."""
    model = paddle.nn.Sequential(paddle.nn.Linear(4, 3), paddle.nn.Linear(3, 2))
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    del state["1.bias"]
    state["2.weight"] = np.zeros((2, 2), "float32")
    state["0.weight"] = np.zeros((5, 3), "float32")
    return model, state


def test_compare_state_dict_names_missing_unexpected_and_mismatched():
    model, state = _model_and_bad_state()
    diff = compare_state_dict(model.state_dict(), state)
    assert diff.missing == ["1.bias"]
    assert diff.unexpected == ["2.weight"]
    assert diff.mismatched == [("0.weight", (5, 3), (4, 3))]
    assert not compare_state_dict(model.state_dict(), {k: v.numpy() for k, v in model.state_dict().items()})
    msg = state_dict_mismatch_message(diff, "w.pdparams", "Sequential", "(hint)")
    assert msg == ("w.pdparams does not match model Sequential (hint): missing keys: 1.bias; unexpected keys: "
                   "2.weight; shape mismatch: 0.weight: checkpoint (5, 3) vs model (4, 3)")
    many = compare_state_dict({f"k{i}": np.zeros(1) for i in range(25)}, {})
    assert state_dict_mismatch_message(many, "s", "m").endswith("k19, ... (25 in all)")


def test_weights_mismatch_message_counts_and_shows_a_few_keys_of_each_kind():
    diff = compare_state_dict({f"k{i}": np.zeros(2) for i in range(10)},
                              {**{f"k{i}": np.zeros(2) for i in range(5)}, "k5": np.zeros(3), "x": np.zeros(1)})
    msg = weights_mismatch_message(diff, "w.pdparams", "m_tiny", 10, "check it", " for this config")
    assert msg == ("w.pdparams does not hold m_tiny weights for this config: 4 of 10 model keys missing, 1 of another "
                   "shape, 1 unexpected (e.g. missing k6; unexpected x; k5: checkpoint (3,) vs model (2,)); "
                   "check it")
    few = compare_state_dict({"a": np.zeros(1)}, {})
    assert weights_mismatch_message(few, "s", "m", 1, "fix") == ("s does not hold m weights: 1 of 1 model keys "
                                                                 "missing (missing a); fix")


def test_every_loader_reports_a_mismatch_in_the_same_words(tmp_path):
    """create_model(pretrained=...), resume (checkpoint.load_exact) and the converter share the message: the
    registered name, counts and a few example keys of each kind (not hundreds of names)."""
    from ppvit.commands.convert import ConversionError, convert_checkpoint
    from ppvit.engine.checkpoint import load_exact

    model = ppvit.create_model("convmixer_256_8", dim=16, depth=1)
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    first = next(iter(state))
    dropped = next(k for k in state if k.endswith("bias"))
    state.pop(dropped)
    state["extra.weight"] = np.zeros(3, "float32")
    state[first] = np.zeros((1, 1, 1, 1), "float32")
    path = tmp_path / "bad.safetensors"
    save_state(state, path)
    # (the converter also sees the head's Linear as transposed: 3 of another shape there)
    expected = ["does not hold convmixer_256_8 weights", f"1 of {len(state)} model keys missing, ",
                f"missing {dropped}; unexpected extra.weight; {first}: checkpoint (1, 1, 1, 1) vs model (16, 3, "]

    messages = []
    with pytest.raises(CheckpointError) as e:
        ppvit.create_model("convmixer_256_8", dim=16, depth=1, pretrained=str(path))
    messages.append(str(e.value))
    with pytest.raises(CheckpointError) as e:
        load_exact(ppvit.create_model("convmixer_256_8", dim=16, depth=1), state, str(path))
    messages.append(str(e.value))
    torch_layout = tmp_path / "torch_layout.safetensors"  # ConvMixer's timm layout is ppvit's own
    save_state(state, torch_layout)
    with pytest.raises(ConversionError) as e:
        convert_checkpoint("convmixer_256_8", torch_layout, tmp_path / "out.pdparams", dim=16, depth=1)
    messages.append(str(e.value))
    for msg in messages:
        assert "\n" not in msg and "ConvMixer" not in msg and all(w in msg for w in expected), msg
    assert not (tmp_path / "out.pdparams").exists()


def test_training_checkpoints_are_unwrapped_once(tmp_path):
    weights = {"a": np.ones((2, 2), "float32")}
    for wrapped in ({"state_dict": weights}, {"model": weights, "epoch": 3}, {"net": {"module": weights}}):
        assert unwrap_state_dict(wrapped) is weights
        path = tmp_path / "wrapped.pdparams"
        paddle.save(wrapped, str(path))
        assert list(load_state(path)) == ["a"]
    assert unwrap_state_dict(weights) is weights


def test_write_json_is_strict_and_atomic(tmp_path):
    path = tmp_path / "metrics.json"
    write_json(path, {"top1": 0.5})
    assert json.loads(path.read_text()) == {"top1": 0.5}
    # JSON has no NaN or Infinity: they are written as null, so strict readers accept the file
    write_json(path, {"top1": float("nan"), "loss": [1.0, float("inf")], "n": np.float32(2.5)})

    def refuse(constant):
        raise ValueError(constant)

    assert json.loads(path.read_text(), parse_constant=refuse) == {"top1": None, "loss": [1.0, None], "n": 2.5}
    assert os.listdir(tmp_path) == ["metrics.json"]
