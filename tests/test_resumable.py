"""data/resumable.py: each sample's draws are a function of its (index, seed) pair, not of the caller's state."""
import random

from resmlp.data.resumable import PositionSampler, SeededDataset


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
    assert ds[(1, 7)] == ds[(1, 7)] and ds[(1, 7)] != ds[(1, 8)]
    assert random.getstate() == before


def test_unseeded_items_skip_the_seeding():
    ds = SeededDataset(Draw(), seeded=False)
    assert ds[(1, 7)][0] == 1 and ds[(1, 7)] != ds[(1, 7)]  # the caller's generator advances: no reseeding


class Order(list):
    """An epoch sampler: a fixed order with `set_epoch`."""

    def set_epoch(self, epoch):
        pass


def test_position_sampler_skips_the_samples_already_done_and_keeps_their_seeds():
    sampler = PositionSampler(Order([5, 3, 0, 1, 2, 4]), seed=0, rank=0)
    whole = list(sampler)
    sampler.set_epoch(0, start=4)
    assert list(sampler) == whole[4:] and [i for i, _ in whole[4:]] == [2, 4] and len(sampler) == 2
