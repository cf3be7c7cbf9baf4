"""data/resumable.py: each sample's draws are a function of its (index, seed) pair, not of the caller's state;
the alternating flip is a function of (run seed, index, epoch)."""

import random

import pytest
import torch

from resmlp.data.resumable import PositionSampler, SeededDataset, alternating_flip


class Draw:
    """A dataset whose item is a random draw (what an augmentation does)."""

    def __len__(self):
        return 4

    def __getitem__(self, index):
        return index, random.random()


def test_seeded_items_repeat_for_the_same_seed_and_leave_the_caller_state_alone():
    ds = SeededDataset(Draw())
    random.seed(123)
    before = random.getstate()
    assert ds[(1, 7, 0)] == ds[(1, 7, 0)] and ds[(1, 7, 0)] != ds[(1, 8, 0)]
    assert random.getstate() == before


def test_unseeded_items_skip_the_seeding():
    ds = SeededDataset(Draw(), seeded=False)
    assert ds[(1, 7, 0)][0] == 1 and ds[(1, 7, 0)] != ds[(1, 7, 0)]  # the caller's generator advances: no reseeding


def test_the_alternating_flip_takes_half_the_images_and_inverts_every_epoch():
    flips = torch.tensor([[alternating_flip(3, i, e) for i in range(4000)] for e in range(4)])
    assert 0.46 < flips[0].float().mean() < 0.54
    assert (flips[1] == ~flips[0]).all() and (flips[2] == flips[0]).all() and (flips[3] == flips[1]).all()
    other_seed = torch.tensor([alternating_flip(4, i, 0) for i in range(4000)])
    assert 0.4 < (other_seed == flips[0]).float().mean() < 0.6  # another run seed picks another half


class Images:
    """(C, H, W) images whose pixels say their index."""

    def __len__(self):
        return 64

    def __getitem__(self, index):
        return torch.arange(6.0).view(1, 2, 3) + 100 * index, index


@pytest.mark.parametrize("seeded", [True, False])
def test_seeded_dataset_flips_the_images_the_alternating_flip_picks(seeded):
    plain, flipping = SeededDataset(Images(), seeded=seeded), SeededDataset(Images(), seeded=seeded, flip_seed=5)
    for epoch in range(3):
        for index in range(64):
            image, label = flipping[(index, 11, epoch)]
            expected = plain[(index, 11, epoch)][0]
            expected = expected.flip(-1) if alternating_flip(5, index, epoch) else expected
            assert label == index and torch.equal(image, expected)


class Order(list):
    """An epoch sampler: a fixed order with `set_epoch`."""

    def set_epoch(self, epoch):
        pass


def test_position_sampler_skips_the_samples_already_done_and_keeps_their_seeds():
    sampler = PositionSampler(Order([5, 3, 0, 1, 2, 4]), seed=0, rank=0)
    whole = list(sampler)
    sampler.set_epoch(0, start=4)
    assert list(sampler) == whole[4:] and [i for i, _, _ in whole[4:]] == [2, 4] and len(sampler) == 2
    sampler.set_epoch(3)
    assert {epoch for _, _, epoch in sampler} == {3}  # the alternating flip reads the epoch from here
