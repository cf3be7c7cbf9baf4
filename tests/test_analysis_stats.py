"""Sparsity, locality and LayerScale on planted weights whose answers are known by hand."""

import math

import pytest
import torch

import resmlp
from resmlp.analysis.stats import (
    block_weights,
    layer_scale,
    layer_stats,
    locality,
    patch_distances,
    peak_locality,
    sparsity,
)


def shift(grid, dr, dc):
    """A that feeds output patch (r, c) from input patch (r + dr, c + dc), where that patch exists."""
    n = grid * grid
    a = torch.zeros(n, n)
    for r in range(grid):
        for c in range(grid):
            if 0 <= r + dr < grid and 0 <= c + dc < grid:
                a[r * grid + c, (r + dr) * grid + c + dc] = 1.0
    return a


def test_patch_distances_row_major_grid():
    d = patch_distances(3)
    assert d.shape == (9, 9)
    assert d[0, 8] == 2 and d[4, 0] == 1 and d[1, 7] == 2 and torch.all(d.diagonal() == 0)
    assert patch_distances(3, "euclidean")[0, 8] == pytest.approx(math.sqrt(8))
    with pytest.raises(ValueError, match="unknown distance 'manhattan'"):
        patch_distances(3, "manhattan")


@pytest.mark.parametrize(
    "dr,dc,dist,share",
    [
        (0, 0, 0.0, 1.0),  # identity: every output patch reads only itself
        (0, 1, 1.0, 1.0),  # right neighbour
        (1, 0, 1.0, 1.0),  # the patch below (row-major shift by one grid row)
        (-1, -1, 1.0, 1.0),  # diagonal neighbour: still inside the 3x3 window
        (0, 2, 2.0, 0.0),  # two patches away: outside the 3x3 window
    ],
)
def test_locality_of_planted_shifts(dr, dc, dist, share):
    grid = 5
    loc = locality(-3.0 * shift(grid, dr, dc), grid)  # sign and scale do not matter
    assert loc["mean_distance"] == pytest.approx(dist)
    assert loc["share_3x3"] == pytest.approx(share)
    assert loc["mean_distance_euclidean"] == pytest.approx(math.hypot(dr, dc))
    assert loc["peak_in_3x3"] == share  # border rows without that neighbour are all zero and left out


def test_locality_mixture_and_uniform_baseline():
    grid = 4
    a = 3 * shift(grid, 0, 0) + shift(grid, 0, 3)  # weight 3 at distance 0, weight 1 at distance 3
    rows_with_far = 4  # only column 0 has an input three columns to the right
    expected = 3 * rows_with_far / (3 * 16 + rows_with_far)
    assert locality(a, grid)["mean_distance"] == pytest.approx(expected)
    # With all weights equal on a 2x2 grid every other patch is at distance 1: mean 12/16, all in 3x3.
    assert locality(torch.ones(4, 4), 2) == pytest.approx(
        {
            "mean_distance": 0.75,
            "mean_distance_euclidean": (8 + 4 * math.sqrt(2)) / 16,
            "share_3x3": 1.0,
            "peak_in_3x3": 1.0,
        }
    )


def test_peak_in_3x3_ignores_a_diffuse_background():
    grid = 5
    a = 0.1 * torch.ones(25, 25) + shift(grid, 0, 1) + torch.eye(25)  # self (and right neighbour) on top
    loc = locality(a, grid)
    assert loc["peak_in_3x3"] == 1.0 and loc["share_3x3"] < 0.6
    far = torch.zeros(25, 25)
    far[:, 24] = 1.0  # every output reads the bottom-right patch: only its 3x3 neighbours (4 patches) count
    assert locality(far, grid)["peak_in_3x3"] == pytest.approx(4 / 25)


def test_locality_rejects_wrong_shape_and_zero_matrix_is_undefined():
    with pytest.raises(ValueError, match=r"expected \(16, 16\) for a 4x4 patch grid"):
        locality(torch.ones(9, 9), 4)
    assert locality(torch.zeros(16, 16), 4)["mean_distance"] is None


def test_peak_locality_measures_from_each_rows_peak():
    grid = 4
    assert peak_locality(shift(grid, 1, 1), grid)["peak_mean_distance"] == pytest.approx(0.0)
    rows = torch.zeros(1, 16)
    rows[0, 5] = 2.0  # peak at (1, 1)
    rows[0, 15] = -1.0  # (3, 3): distance 2 from the peak
    out = peak_locality(rows, grid)
    assert out["peak_mean_distance"] == pytest.approx(2 / 3) and out["peak_share_3x3"] == pytest.approx(2 / 3)


def test_sparsity_counts_entries_below_five_percent_of_the_max():
    assert sparsity(torch.tensor([1.0, -0.049, 0.05, 0.5])) == 0.25  # 0.05 is not below 5% of 1.0
    assert sparsity(torch.eye(16)) == pytest.approx(1 - 1 / 16)
    assert sparsity(torch.zeros(3, 3)) == 1.0
    assert sparsity(torch.tensor([1.0, 0.2, 0.1]), threshold=0.15) == pytest.approx(1 / 3)


def planted_model():
    torch.manual_seed(0)
    model = resmlp.create_model("resmlp_micro8")  # 4x4 patch grid, 4 blocks
    with torch.no_grad():
        for i, ws in enumerate(block_weights(model)):
            ws["A"].copy_(torch.eye(16) if i % 2 == 0 else shift(4, 1, 0))
            ws["B"].zero_()[:, 0] = 1.0  # exactly one non-zero column of 128
            model.blocks[i].ls1.fill_(0.1 * (i + 1))
            model.blocks[i].ls2.fill_(-0.01)
    return model


def test_layer_stats_on_a_planted_model():
    stats = layer_stats(planted_model())
    assert len(stats) == 4
    for i, s in enumerate(stats):
        assert s["sparsity"]["A"] == pytest.approx(1 - 1 / 16 if i % 2 == 0 else 1 - 12 / 256)
        assert s["sparsity"]["B"] == pytest.approx(1 - 1 / 128)
        assert s["locality"]["mean_distance"] == pytest.approx(0.0 if i % 2 == 0 else 1.0)
        assert s["locality"]["share_3x3"] == pytest.approx(1.0)
        assert s["locality"]["peak_mean_distance"] == pytest.approx(0.0)


def test_layer_scale_means_absolute_values():
    scales = layer_scale(planted_model())
    assert [s["ls1"] for s in scales] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert all(s["ls2"] == pytest.approx(0.01) for s in scales)
    assert layer_scale(resmlp.create_model("mixer_tiny32", depth=1, embed_dim=16)) == []


def test_mixer_a_is_the_token_mlp_fc1():
    model = resmlp.create_model("mixer_tiny32", depth=2, embed_dim=16, img_size=16)  # 4x4 grid, hidden 8
    assert block_weights(model)[1]["A"] is model.blocks[1].mlp_tokens.fc1.weight
    stats = layer_stats(model)
    assert "mean_distance" not in stats[0]["locality"] and 0 <= stats[0]["locality"]["peak_share_3x3"] <= 1
