"""Sampling that can stop and resume mid-epoch exactly, whatever the number of loader workers.

`PositionSampler` wraps an epoch sampler (RepeatedAugSampler, DistributedSampler) and yields
`(index, sample_seed)` pairs from a start position; `SeededDataset` runs each `dataset[index]` with
the torch, `random` and numpy generators seeded from `sample_seed`. An image's augmentation is then a
function of (run seed, epoch, rank, position in the epoch) only: not of which worker decoded it, nor of
how many samples that worker drew before, so a run resumed at step k of an epoch draws the same crops,
flips, RandAugment ops and erasing boxes as the run that never stopped.

`data.hflip_alternate` replaces the random horizontal flip by the alternating one of the fast-CIFAR
trainings (cifar10-airbench's "derandomized" flip): a seeded half of the images is flipped in even epochs,
the other half in odd ones, so every image is seen both ways within any two consecutive epochs.
`SeededDataset` applies it to each sample's output tensor (a function of run seed, index and epoch).
"""

from __future__ import annotations

import random
from typing import Any, Iterator, Optional

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def sample_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """A 63-bit seed for one sample (hash of a tuple of ints: the same in every process and Python run)."""
    return hash((seed, epoch, rank, position)) & (2**63 - 1)


def _mix64(x: int) -> int:
    """SplitMix64's finaliser: every output bit depends on every input bit (a tuple hash's low bit does not:
    two run seeds would pick nearly the same half of the images)."""
    x = (x + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return x ^ (x >> 31)


def alternating_flip(seed: int, index: int, epoch: int) -> bool:
    """Whether sample `index` is flipped in `epoch` under the alternating flip: a seeded half of the samples
    in even epochs, the other half in odd ones."""
    return bool((_mix64(_mix64(seed) ^ index) ^ epoch) & 1)


class PositionSampler(Sampler[tuple[int, int, int]]):
    """`(index, seed, epoch)` of each sample of `sampler`'s epoch order, starting at `start` (samples already
    trained on)."""

    def __init__(self, sampler: Sampler[int], *, seed: int, rank: int) -> None:
        self.sampler = sampler
        self.seed = seed
        self.rank = rank
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, *, start: int = 0) -> None:
        """Select `epoch`'s order (as the wrapped sampler's `set_epoch`) and skip its first `start` samples."""
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.sampler.set_epoch(epoch)
        self.epoch, self.start = epoch, start

    def __iter__(self) -> Iterator[tuple[int, int, int]]:
        for position, index in enumerate(self.sampler):
            if position >= self.start:
                yield index, sample_seed(self.seed, self.epoch, self.rank, position), self.epoch

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.start)


class SeededDataset(Dataset):
    """`dataset[index]` under the generators seeded by `sample_seed`; the caller's generator states are
    restored afterwards (with 0 workers the training process itself runs this). `seeded=False` skips the
    seeding, for a transform that draws nothing (`data.batch_augment`: the batches are augmented later).
    `flip_seed` (not None): the (C, H, W) image tensor of each `(image, label)` item is flipped horizontally
    where `alternating_flip(flip_seed, index, epoch)` says so."""

    def __init__(self, dataset: Dataset, *, seeded: bool = True, flip_seed: Optional[int] = None) -> None:
        self.dataset = dataset
        self.seeded = seeded
        self.flip_seed = flip_seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int, int]) -> Any:
        index, seed, epoch = item
        sample = self._draw(index, seed)
        if self.flip_seed is None or not alternating_flip(self.flip_seed, index, epoch):
            return sample
        image, *rest = sample
        if not isinstance(image, torch.Tensor) or image.ndim != 3:
            raise TypeError(f"the alternating flip needs (C, H, W) image tensors, got {type(image).__name__}")
        return (image.flip(-1), *rest)

    def _draw(self, index: int, seed: int) -> Any:
        if not self.seeded:
            return self.dataset[index]
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            # The CPU generator only (what fork_rng restores): torch.manual_seed also queues a seeding of every
            # accelerator backend, recording a stack trace each time, ~60 us per image on a CPU-only host.
            torch.default_generator.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


__all__ = ["PositionSampler", "SeededDataset", "alternating_flip", "sample_seed"]
