"""Repeated-augmentation sampler (Hoffer et al. 2020; Berman et al. 2019), as used by DeiT and ResMLP.

Each image appears ``num_repeats`` times per epoch, the copies sent to different replicas so each is
augmented differently in the same step. The epoch is then cut back to about one pass over the data,
so "epochs" and learning-rate schedules keep their usual meaning.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


def _default_replicas(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    """Fill missing world size / rank from torch.distributed when it is initialised, else 1 / 0."""
    initialised = dist.is_available() and dist.is_initialized()
    if num_replicas is None:
        num_replicas = dist.get_world_size() if initialised else 1
    if rank is None:
        rank = dist.get_rank() if initialised else 0
    if num_replicas < 1 or not 0 <= rank < num_replicas:
        raise ValueError(f"need num_replicas >= 1 and 0 <= rank < num_replicas, got {num_replicas}, {rank}")
    return num_replicas, rank


def repeated_indices(dataset_len: int, *, num_repeats: int, shuffle: bool, seed: int, epoch: int) -> list[int]:
    """The epoch's order before the replica split: a (seeded) permutation, each index repeated in place.

    ``[a, b, ...] -> [a, a, a, b, b, b, ...]`` for three repeats.
    """
    if shuffle:
        generator = torch.Generator().manual_seed(seed + epoch)
        order = torch.randperm(dataset_len, generator=generator).tolist()
    else:
        order = list(range(dataset_len))
    return [index for index in order for _ in range(num_repeats)]


def samples_per_replica(dataset_len: int, *, num_replicas: int, selected_round: int) -> int:
    """Samples each replica draws per epoch: about one pass over the data, rounded like DeiT."""
    if selected_round > 0 and dataset_len >= selected_round:
        return dataset_len // selected_round * selected_round // num_replicas
    return math.ceil(dataset_len / num_replicas)


class RepeatedAugSampler(Sampler[int]):
    """Distributed sampler with repeated augmentation (DeiT's RASampler semantics).

    Per epoch: permute with a generator seeded by ``seed + epoch`` (same on every rank), repeat each
    index ``num_repeats`` times consecutively, pad by wrapping to a multiple of ``num_replicas``, give
    rank ``r`` every ``num_replicas``-th index starting at ``r`` (so consecutive copies land on
    different ranks), and keep the first ``len(self)`` of them. Call ``set_epoch`` before each epoch.
    """

    def __init__(
        self,
        dataset_len: int,
        *,
        num_repeats: int = 3,
        num_replicas: int | None = None,
        rank: int | None = None,
        shuffle: bool = True,
        seed: int = 0,
        selected_round: int = 256,
    ) -> None:
        if dataset_len < 1:
            raise ValueError(f"dataset_len must be >= 1, got {dataset_len}")
        if num_repeats < 1:
            raise ValueError(f"num_repeats must be >= 1, got {num_repeats}")
        self.dataset_len = dataset_len
        self.num_repeats = num_repeats
        self.num_replicas, self.rank = _default_replicas(num_replicas, rank)
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0
        self.num_samples = samples_per_replica(
            dataset_len, num_replicas=self.num_replicas, selected_round=selected_round
        )
        if self.num_samples < 1:
            raise ValueError(
                f"{dataset_len} samples rounded down to multiples of {selected_round} leave "
                f"none for each of {self.num_replicas} replicas; lower selected_round"
            )
        # Every replica's share of the padded, repeated list; the kept prefix must fit in it.
        self.total_size = math.ceil(dataset_len * num_repeats / self.num_replicas) * self.num_replicas

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch`` (all ranks must use the same epoch)."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        indices = repeated_indices(
            self.dataset_len, num_repeats=self.num_repeats, shuffle=self.shuffle, seed=self.seed, epoch=self.epoch
        )
        padding = self.total_size - len(indices)
        indices += (indices * math.ceil(padding / len(indices)))[:padding]  # wrap to divide evenly
        mine = indices[self.rank : self.total_size : self.num_replicas]
        return iter(mine[: self.num_samples])

    def __len__(self) -> int:
        return self.num_samples


__all__ = ["RepeatedAugSampler", "repeated_indices", "samples_per_replica"]
