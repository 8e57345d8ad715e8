"""The training sampler and sample wrapper that make a run's batches and augmentations a function of
``(seed, epoch, index)`` only: resume mid-epoch and any ``num_workers`` see exactly the same data."""
import random

import numpy as np
import paddle

from .distributed import rank, world_size


class EpochBatchSampler(paddle.io.DistributedBatchSampler):
    """The training batch sampler, single- or multi-process.

    The shuffle of epoch ``e`` is a function of ``(seed, e)`` only, and ``start_batch`` skips the batches
    a resumed run has already trained on, so a run resumed mid-epoch sees exactly the remaining batches.
    """

    def __init__(self, dataset, batch_size, seed, drop_last):
        n = len(dataset)
        # too few samples for one full batch (smoke runs on Data.limit): keep the partial batch
        drop_last = drop_last and n >= batch_size * world_size()
        super().__init__(dataset, batch_size, num_replicas=world_size(), rank=rank(), shuffle=True,
                         drop_last=drop_last)
        self.seed = seed
        self.start_batch = 0

    def set_epoch(self, epoch, start_batch=0):
        super().set_epoch((self.seed * 100003 + epoch) % 2**32)
        self.start_batch = start_batch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self):
        for i, batch in enumerate(super().__iter__()):
            if i >= self.start_batch:
                yield batch


class SeededSamples(paddle.io.Dataset):
    """Training samples whose random augmentation is a function of ``(seed, epoch, index)`` only.

    Paddle's loader prepares batches ahead of the training step (a thread, or worker processes), so the
    global python/numpy RNG state at any step boundary says nothing about the augmentations still to come.
    Re-seeding before every sample makes them reproducible: a run resumed mid-epoch, or run with another
    ``num_workers``, augments every image exactly as the uninterrupted run did.
    """

    def __init__(self, dataset, seed):
        self.dataset, self.seed, self.epoch = dataset, seed, 0
        self.class_names = getattr(dataset, "class_names", None)

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        state = np.random.SeedSequence([self.seed % 2**32, self.epoch, int(index)]).generate_state(2)
        random.seed(int(state[0]))
        np.random.seed(int(state[1]))
        return self.dataset[index]
