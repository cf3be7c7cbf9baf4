"""Tests for resmlp.data.sampler: repeated augmentation with DeiT's epoch length and replica split."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from resmlp.data.sampler import RepeatedAugSampler, repeated_indices


def _ranks(dataset_len: int, num_replicas: int, epoch: int = 0, **kwargs) -> list[list[int]]:
    samplers = [
        RepeatedAugSampler(dataset_len, num_replicas=num_replicas, rank=r, **kwargs) for r in range(num_replicas)
    ]
    for sampler in samplers:
        sampler.set_epoch(epoch)
    return [list(sampler) for sampler in samplers]


def test_repeated_indices_repeat_consecutively_and_cover_everything() -> None:
    order = repeated_indices(10, num_repeats=3, shuffle=True, seed=0, epoch=0)
    groups = [order[i : i + 3] for i in range(0, len(order), 3)]
    assert all(len(set(group)) == 1 for group in groups)
    assert sorted(group[0] for group in groups) == list(range(10))
    assert order[::3] != list(range(10))  # actually shuffled
    assert repeated_indices(4, num_repeats=2, shuffle=False, seed=0, epoch=5) == [0, 0, 1, 1, 2, 2, 3, 3]


def test_replicas_interleave_back_into_the_repeated_order() -> None:
    per_rank = _ranks(100, num_replicas=2, num_repeats=3, seed=7, epoch=1)
    merged = [per_rank[k % 2][k // 2] for k in range(2 * len(per_rank[0]))]
    assert merged == repeated_indices(100, num_repeats=3, shuffle=True, seed=7, epoch=1)[: len(merged)]


def test_consecutive_repeats_land_on_different_ranks() -> None:
    order = repeated_indices(12, num_repeats=3, shuffle=True, seed=0, epoch=0)
    per_rank = _ranks(12, num_replicas=3, num_repeats=3, selected_round=0)
    # With as many replicas as repeats, the ranks draw the same images in the same step, each to be
    # augmented differently; the epoch keeps ceil(12 / 3) = 4 of them per rank.
    assert per_rank[0] == per_rank[1] == per_rank[2] == order[::3][:4]
    two = _ranks(12, num_replicas=2, num_repeats=3, selected_round=0)
    assert order[0] == order[1] and two[0][0] == two[1][0] == order[0]


def test_padding_wraps_to_divide_evenly() -> None:
    per_rank = _ranks(5, num_replicas=4, num_repeats=3, selected_round=0)  # 15 copies -> padded 16
    assert [len(r) for r in per_rank] == [2, 2, 2, 2]  # ceil(5 / 4)
    sampler = RepeatedAugSampler(5, num_replicas=4, rank=3, num_repeats=3, selected_round=0)
    assert sampler.total_size == 16


@pytest.mark.parametrize(
    ("dataset_len", "replicas", "expected"),
    [
        (1000, 1, 768),
        (1000, 2, 384),
        (1000, 3, 256),
        (256, 4, 64),
        (255, 4, 64),
        (10, 3, 4),
        (1, 2, 1),
    ],
)
def test_epoch_length_matches_deit(dataset_len: int, replicas: int, expected: int) -> None:
    per_rank = _ranks(dataset_len, num_replicas=replicas)
    assert [len(r) for r in per_rank] == [expected] * replicas
    sampler = RepeatedAugSampler(dataset_len, num_replicas=replicas, rank=0)
    assert len(sampler) == expected
    if dataset_len >= 256:
        assert expected == math.floor(dataset_len // 256 * 256 / replicas)


def test_set_epoch_changes_order_and_seed_is_deterministic() -> None:
    first = _ranks(300, num_replicas=2, epoch=0, seed=3)
    assert _ranks(300, num_replicas=2, epoch=0, seed=3) == first
    assert _ranks(300, num_replicas=2, epoch=1, seed=3) != first
    assert _ranks(300, num_replicas=2, epoch=0, seed=4) != first
    sampler = RepeatedAugSampler(300, num_replicas=1, rank=0, seed=3)
    assert list(sampler) == list(sampler)  # iterating twice in one epoch repeats it


def test_no_shuffle_is_ordered() -> None:
    sampler = RepeatedAugSampler(6, num_replicas=2, rank=1, shuffle=False, num_repeats=2)
    assert list(sampler) == [0, 1, 2]  # from [0, 0, 1, 1, 2, 2, ...] every second item


def test_defaults_without_distributed_and_dataloader_use() -> None:
    sampler = RepeatedAugSampler(8, num_repeats=2)
    assert (sampler.num_replicas, sampler.rank) == (1, 0)
    loader = DataLoader(TensorDataset(torch.arange(8)), batch_size=4, sampler=sampler)
    seen = torch.cat([batch[0] for batch in loader]).tolist()
    assert len(seen) == 8 and seen[0::2] == seen[1::2]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dataset_len": 0},
        {"dataset_len": 4, "num_repeats": 0},
        {"dataset_len": 4, "rank": 2, "num_replicas": 2},
        {"dataset_len": 300, "num_replicas": 512},
    ],
)
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        RepeatedAugSampler(**kwargs)
