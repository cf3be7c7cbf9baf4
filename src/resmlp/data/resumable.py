"""Sampling that can stop and resume mid-epoch exactly, whatever the number of loader workers.

`PositionSampler` wraps an epoch sampler (RepeatedAugSampler, DistributedSampler) and yields
`(index, sample_seed)` pairs from a start position; `SeededDataset` runs each `dataset[index]` with
the torch, `random` and numpy generators seeded from `sample_seed`. An image's augmentation is then a
function of (run seed, epoch, rank, position in the epoch) only: not of which worker decoded it, nor of
how many samples that worker drew before, so a run resumed at step k of an epoch draws the same crops,
flips, RandAugment ops and erasing boxes as the run that never stopped.
"""
from __future__ import annotations

import random
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def sample_seed(seed: int, epoch: int, rank: int, position: int) -> int:
    """A 63-bit seed for one sample (hash of a tuple of ints: the same in every process and Python run)."""
    return hash((seed, epoch, rank, position)) & (2**63 - 1)


class PositionSampler(Sampler[tuple[int, int]]):
    """`(index, seed)` pairs of `sampler`'s epoch order, starting at `start` (samples already trained on)."""

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

    def __iter__(self) -> Iterator[tuple[int, int]]:
        for position, index in enumerate(self.sampler):
            if position >= self.start:
                yield index, sample_seed(self.seed, self.epoch, self.rank, position)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.start)


class SeededDataset(Dataset):
    """`dataset[index]` under the generators seeded by `sample_seed`; the caller's generator states are
    restored afterwards (with 0 workers the training process itself runs this). `seeded=False` skips the
    seeding, for a transform that draws nothing (`data.batch_augment`: the batches are augmented later)."""

    def __init__(self, dataset: Dataset, *, seeded: bool = True) -> None:
        self.dataset = dataset
        self.seeded = seeded

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        if not self.seeded:
            return self.dataset[index]
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


__all__ = ["PositionSampler", "SeededDataset", "sample_seed"]
