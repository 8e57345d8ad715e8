"""The training sampler and sample wrapper that make a run's batches and augmentations a function of
``(seed, epoch, index)`` only: resume mid-epoch and any ``num_workers`` see exactly the same data."""
import math
import random

import numpy as np
import paddle

from .distributed import rank, world_size


class EpochBatchSampler(paddle.io.DistributedBatchSampler):
    """The training batch sampler, single- or multi-process.

    The shuffle of epoch ``e`` is a function of ``(seed, e)`` only, and ``start_batch`` skips the batches
    a resumed run has already trained on, so a run resumed mid-epoch sees exactly the remaining batches.
    """

    def __init__(self, dataset, batch_size, seed, drop_last, num_repeats=1):
        n = len(dataset)
        # too few samples for one full batch (smoke runs on Data.limit): keep the partial batch
        drop_last = drop_last and n >= batch_size * world_size()
        super().__init__(dataset, batch_size, num_replicas=world_size(), rank=rank(), shuffle=True,
                         drop_last=drop_last)
        self.seed = seed
        self.start_batch = 0
        self.repeats = RepeatedAugIndices(n, num_repeats, world_size(), rank()) if num_repeats > 1 else None

    def set_epoch(self, epoch, start_batch=0):
        super().set_epoch((self.seed * 100003 + epoch) % 2**32)
        self.start_batch = start_batch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def _batches(self):
        if self.repeats is None:
            yield from super().__iter__()
            return
        indices = self.repeats.indices(self.epoch)
        for i in range(0, len(indices), self.batch_size):
            batch = indices[i:i + self.batch_size]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __iter__(self):
        for i, batch in enumerate(self._batches()):
            if i >= self.start_batch:
                yield batch

    def __len__(self):
        if self.repeats is None:
            return super().__len__()
        n = len(self.repeats)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


class RepeatedAugIndices:
    """DeiT's repeated-augmentation sampler (``RASampler`` of facebookresearch/deit, Hoffer et al. 2020):
    each epoch shuffles the dataset, repeats every index ``num_repeats`` times in a row, pads to a multiple of
    the rank count and deals the list out round-robin, so the copies of an image land on different ranks and
    get different augmentations. An epoch then keeps the first ``len(dataset) // 256 * 256 / num_replicas``
    indices per rank (as many images as one plain epoch, rounded down to 256s); a dataset smaller than 256
    keeps ``len(dataset) // num_replicas`` (DeiT's rule would leave none). The shuffle is numpy's, seeded by the
    epoch seed (DeiT's: ``torch.randperm`` seeded by the epoch).
    """

    def __init__(self, n, num_repeats, num_replicas=1, rank=0):
        if num_repeats < 1:
            raise ValueError(f"Data.repeated_aug must be >= 1, got {num_repeats}")
        self.n, self.num_repeats, self.num_replicas, self.rank = n, int(num_repeats), num_replicas, rank
        self.num_samples = int(math.ceil(n * self.num_repeats / num_replicas))
        self.total_size = self.num_samples * num_replicas
        kept = n // 256 * 256 if n >= 256 else n
        self.num_selected = int(math.floor(kept / num_replicas))

    def indices(self, epoch_seed):
        order = np.random.RandomState(epoch_seed % 2**32).permutation(self.n).tolist()
        out = [i for i in order for _ in range(self.num_repeats)]
        out += out[:self.total_size - len(out)]
        return out[self.rank:self.total_size:self.num_replicas][:self.num_selected]

    def __len__(self):
        return self.num_selected


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
