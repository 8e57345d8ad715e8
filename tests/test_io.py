import os

import numpy as np
import paddle
import pytest

from ppvit.io import CheckpointError, atomic_path, load_state, save_state


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
