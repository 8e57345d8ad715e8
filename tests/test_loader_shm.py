"""Loader workers on a small /dev/shm: the loaders pass batches without shared memory, with one log line."""
import logging

import numpy as np

from ppvit.data import loader
from ppvit.engine.builder import build_loaders

DATA = {"dataset": "digits", "transform": "basic", "image_size": 16, "batch_size": 4, "eval_batch_size": 4,
        "num_workers": 1, "limit": 8, "drop_last": True}


class Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _captured(fn):
    handler, log = Lines(), logging.getLogger("ppvit")
    log.addHandler(handler)
    try:
        return fn(), [m for m in handler.lines if "shared memory" in m]
    finally:
        log.removeHandler(handler)


def test_small_shm_falls_back_to_pipes_with_one_line(monkeypatch):
    monkeypatch.setattr(loader, "shm_free_bytes", lambda path=loader.SHM_PATH: 1 << 12)  # 4 KB left
    (train, evaluate, _, _), lines = _captured(lambda: build_loaders(dict(DATA), seed=0))
    assert len(lines) == 1 and "use_shared_memory=False" in lines[0] and "1 loader workers" in lines[0], lines
    assert train.use_shared_memory is False and evaluate.use_shared_memory is False
    train.batch_sampler.set_epoch(0)
    images, labels = next(iter(train))  # a worker process delivers through a pipe
    assert list(images.shape) == [4, 3, 16, 16] and np.isfinite(images.numpy()).all()


def test_enough_shm_or_no_workers_keeps_shared_memory(monkeypatch):
    monkeypatch.setattr(loader, "shm_free_bytes", lambda path=loader.SHM_PATH: 1 << 40)
    ok, lines = _captured(lambda: loader.use_shared_memory(dict(DATA)))
    assert ok is True and not lines
    monkeypatch.setattr(loader, "shm_free_bytes", lambda path=loader.SHM_PATH: 0)
    ok, lines = _captured(lambda: loader.use_shared_memory(dict(DATA, num_workers=0)))
    assert ok is True and not lines  # no workers: nothing to share
