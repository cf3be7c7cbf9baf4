import random

import pytest
import torch

from resmlp.data.random_erasing import RandomErasing


def _seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _erased_box(mask: torch.Tensor) -> tuple[int, int, int, int]:
    """Bounding box (top, left, h, w) of a (H, W) boolean mask."""
    rows = mask.any(dim=1).nonzero().flatten()
    cols = mask.any(dim=0).nonzero().flatten()
    return int(rows[0]), int(cols[0]), int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def test_probability_zero_is_identity():
    x = torch.randn(3, 16, 16)
    out = RandomErasing(probability=0.0)(x)
    assert out is not x
    torch.testing.assert_close(out, x, rtol=0, atol=0)


@pytest.mark.parametrize("height, width", [(64, 48), (32, 32)])
def test_erases_one_rectangle_within_area_and_aspect_bounds(height, width):
    erasing = RandomErasing(probability=1.0, mode="const", min_area=0.02, max_area=1 / 3, min_aspect=0.3)
    x = torch.ones(3, height, width)
    erased_count = 0
    for seed in range(40):
        _seed(seed)
        out = erasing(x)
        mask = out == 0
        if not mask.any():  # all 10 attempts can miss; must then be untouched
            torch.testing.assert_close(out, x, rtol=0, atol=0)
            continue
        erased_count += 1
        assert (mask == mask[0]).all(), "same box in every channel"
        top, left, h, w = _erased_box(mask[0])
        assert int(mask[0].sum()) == h * w, "erased region is a filled rectangle"
        assert h < height and w < width
        # Sampled area A in [min, max] * H * W; rounding h, w moves it by at most (h + w) / 2 + 1/4.
        slack = (h + w) / 2 + 0.25
        assert 0.02 * height * width - slack <= h * w <= height * width / 3 + slack
        assert 0.3 - 0.1 <= h / w <= 1 / 0.3 + 0.5  # rounding slack for small boxes
    assert erased_count >= 35


def test_modes_fill_values():
    x = torch.full((3, 32, 32), 7.0)
    _seed(0)
    pixel = RandomErasing(probability=1.0, mode="pixel")(x)
    region = pixel[pixel != 7.0].view(3, -1)
    assert region.shape[1] > 1 and region.std() > 0.3  # independent N(0, 1) per pixel
    _seed(0)
    rand = RandomErasing(probability=1.0, mode="rand")(x)
    region = rand[rand != 7.0].view(3, -1)
    assert (region == region[:, :1]).all() and region[:, 0].unique().numel() == 3  # one value per channel
    _seed(0)
    const = RandomErasing(probability=1.0, mode="const")(x)
    torch.testing.assert_close((const == 0).sum(), (pixel != 7.0).sum())  # same box, zero fill


def test_seeded_determinism_and_batch():
    erasing = RandomErasing(probability=1.0, mode="pixel")
    x = torch.zeros(4, 3, 24, 24)
    _seed(5)
    first = erasing(x)
    _seed(5)
    torch.testing.assert_close(erasing(x), first, rtol=0, atol=0)
    _seed(6)
    assert not torch.equal(erasing(x), first)
    masks = [(first[i] != 0).any(0) for i in range(4)]
    assert len({tuple(_erased_box(m)) for m in masks}) > 1, "samples of a batch get their own boxes"
    assert torch.equal(x, torch.zeros(4, 3, 24, 24)), "input is not modified"


def test_max_count_splits_area():
    erasing = RandomErasing(probability=1.0, mode="const", min_count=3, max_count=3, max_area=0.3)
    _seed(1)
    out = erasing(torch.ones(1, 64, 64))
    assert 0 < int((out == 0).sum()) <= 0.3 * 64 * 64 + 3 * 40  # three boxes sharing the area budget


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "noise"}, "valid modes"),
        ({"probability": 1.5}, "probability"),
        ({"min_area": 0.5, "max_area": 0.2}, "min_area"),
        ({"min_aspect": 0.0}, "min_aspect"),
        ({"min_count": 2, "max_count": 1}, "min_count"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RandomErasing(**kwargs)


def test_bad_input_shape_raises():
    with pytest.raises(ValueError, match="shape"):
        RandomErasing()(torch.zeros(8, 8))
