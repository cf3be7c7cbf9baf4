import numpy as np
import pytest
import torch

from resmlp.data.mixup import Mixup, smooth_one_hot

K = 10
LS = 0.1
ON, OFF = 1 - LS + LS / K, LS / K


def _batch(batch: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 16, 12, generator=g), torch.arange(batch) % K  # distinct labels


def _lam_from_targets(targets: torch.Tensor, y: torch.Tensor) -> float:
    # Row 0 mixes y[0] (weight lam) with y[-1] (weight 1 - lam): t = lam * ON + (1 - lam) * OFF.
    assert y[0] != y[-1]
    return float((targets[0, y[0]] - OFF) / (ON - OFF))


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_smooth_one_hot_exact_values():
    t = smooth_one_hot(torch.tensor([0, 2]), 4, 0.1)
    expected = torch.tensor([[0.925, 0.025, 0.025, 0.025], [0.025, 0.025, 0.925, 0.025]])
    torch.testing.assert_close(t, expected)
    torch.testing.assert_close(smooth_one_hot(torch.tensor([1]), 3, 0.0), torch.tensor([[0.0, 1.0, 0.0]]))
    with pytest.raises(ValueError, match="smoothing"):
        smooth_one_hot(torch.tensor([1]), 3, 1.0)


def test_mixup_pixels_match_lambda_of_targets():
    x, y = _batch()
    mixup = Mixup(num_classes=K, mixup_alpha=0.8, cutmix_alpha=0.0, label_smoothing=LS, generator=_generator(0))
    for _ in range(5):
        out, targets = mixup(x, y)
        lam = _lam_from_targets(targets, y)
        assert 0.0 < lam < 1.0
        torch.testing.assert_close(out, lam * x + (1 - lam) * x.flip(0))
        soft = smooth_one_hot(y, K, LS)
        torch.testing.assert_close(targets, lam * soft + (1 - lam) * soft.flip(0))
        torch.testing.assert_close(targets.sum(1), torch.ones(len(y)))


def test_cutmix_box_area_equals_corrected_lambda():
    batch = 6
    x = torch.arange(1.0, batch + 1).view(batch, 1, 1, 1).expand(batch, 3, 20, 16).contiguous()
    y = torch.arange(batch)
    mixup = Mixup(num_classes=K, mixup_alpha=0.0, cutmix_alpha=1.0, label_smoothing=LS, generator=_generator(1))
    boxes = 0
    for _ in range(20):
        out, targets = mixup(x, y)
        pasted = out != x  # (B, C, H, W); every sample differs from its partner
        mask = pasted[0, 0]
        assert (pasted == mask).all(), "one box for the whole batch and all channels"
        torch.testing.assert_close(out[:, :, mask], x.flip(0)[:, :, mask])
        if mask.any():
            rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
            assert int(mask.sum()) == len(rows) * len(cols), "pasted region is a rectangle"
            boxes += 1
        lam = _lam_from_targets(targets, y)
        assert lam == pytest.approx(1.0 - float(mask.float().mean()), abs=1e-6)
        torch.testing.assert_close(targets.sum(1), torch.ones(batch))
    assert boxes >= 15


def test_switch_prob_picks_mode():
    x, y = _batch()

    def is_cutmix(out: torch.Tensor) -> bool:  # cutmix pixels come unchanged from x or x.flip(0)
        return bool(((out == x) | (out == x.flip(0))).all())

    always_cut = Mixup(num_classes=K, switch_prob=1.0, generator=_generator(2))
    never_cut = Mixup(num_classes=K, switch_prob=0.0, generator=_generator(2))
    assert all(is_cutmix(always_cut(x, y)[0]) for _ in range(10))
    assert not any(is_cutmix(never_cut(x, y)[0]) for _ in range(10))
    half = Mixup(num_classes=K, switch_prob=0.5, generator=_generator(2))
    cut = sum(is_cutmix(half(x, y)[0]) for _ in range(200))
    assert 70 < cut < 130


@pytest.mark.parametrize("kwargs", [{"prob": 0.0}, {"mixup_alpha": 0.0, "cutmix_alpha": 0.0}])
def test_no_mixing_returns_input_and_smoothed_labels(kwargs):
    x, y = _batch()
    out, targets = Mixup(num_classes=K, label_smoothing=LS, generator=_generator(0), **kwargs)(x, y)
    torch.testing.assert_close(out, x, rtol=0, atol=0)
    torch.testing.assert_close(targets, smooth_one_hot(y, K, LS))


def test_odd_batch_middle_sample_is_unchanged():
    x, y = _batch(batch=5)
    out, targets = Mixup(num_classes=K, cutmix_alpha=0.0, generator=_generator(3))(x, y)
    torch.testing.assert_close(out[2], x[2])
    torch.testing.assert_close(targets[2], smooth_one_hot(y, K, 0.1)[2])


def test_seeded_determinism_and_input_untouched():
    x, y = _batch()
    x_copy = x.clone()

    def run(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        return Mixup(num_classes=K, generator=_generator(seed))(x, y)

    out_a, t_a = run(7)
    out_b, t_b = run(7)
    torch.testing.assert_close(out_a, out_b, rtol=0, atol=0)
    torch.testing.assert_close(t_a, t_b, rtol=0, atol=0)
    assert not torch.equal(run(8)[1], t_a)
    torch.testing.assert_close(x, x_copy, rtol=0, atol=0)
    np.random.seed(4)  # without a generator: the global numpy state
    first = Mixup(num_classes=K)(x, y)[1]
    np.random.seed(4)
    torch.testing.assert_close(Mixup(num_classes=K)(x, y)[1], first, rtol=0, atol=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mixup_alpha": -0.1}, "alpha"),
        ({"label_smoothing": 1.0}, "label_smoothing"),
        ({"prob": 1.5}, "prob"),
        ({"switch_prob": -0.5}, "switch_prob"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Mixup(**{"num_classes": K, **kwargs})


def test_bad_shapes_raise():
    x, y = _batch()
    with pytest.raises(ValueError, match="expected x"):
        Mixup(num_classes=K)(x[0], y)
    with pytest.raises(ValueError, match="expected x"):
        Mixup(num_classes=K)(x, y[:-1])
