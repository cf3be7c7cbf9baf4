"""Cross-patch weight maps: rows of A on the patch grid, central-patch selection, mosaics, figures."""

import numpy as np
import pytest
import torch

from resmlp.analysis.weights_maps import (
    central_patches,
    map_rows,
    mosaic,
    mosaic_side,
    offset_profile,
    output_marks,
    patch_maps,
    plot_layer,
    plot_overview,
    strongest_rows,
)


def test_mosaic_side_is_six_for_the_papers_14x14_grid_and_scales():
    assert [mosaic_side(g) for g in (14, 28, 8, 4, 1)] == [6, 12, 3, 2, 1]


def test_central_patches_of_14x14_are_rows_and_columns_4_to_9():
    idx = central_patches(14)
    assert len(idx) == 36
    assert {(i // 14, i % 14) for i in idx} == {(r, c) for r in range(4, 10) for c in range(4, 10)}
    assert idx[:2] == [4 * 14 + 4, 4 * 14 + 5]  # row-major order


def test_identity_maps_are_one_hot_at_the_output_patch():
    grid = 6
    rows = central_patches(grid)
    maps = patch_maps(torch.eye(grid * grid), grid, rows)
    assert maps.shape == (len(rows), grid, grid)
    for m, o in zip(maps, rows):
        hot = (m == 1).nonzero().tolist()
        assert hot == [[o // grid, o % grid]] and m.sum() == 1


def test_shifted_identity_maps_light_up_the_neighbour():
    grid = 5
    a = torch.diag(torch.ones(grid * grid - grid), diagonal=grid)  # output (r, c) reads input (r + 1, c)
    o = 2 * grid + 3
    m = patch_maps(a, grid, [o])[0]
    assert (m == 1).nonzero().tolist() == [[3, 3]]


def test_mosaic_places_tiles_row_major_with_nan_separators():
    maps = torch.arange(4 * 9, dtype=torch.float32).reshape(4, 3, 3)
    tile = mosaic(maps)
    assert tile.shape == (7, 7)
    np.testing.assert_array_equal(tile[:3, :3], maps[0].numpy())
    np.testing.assert_array_equal(tile[:3, 4:], maps[1].numpy())
    np.testing.assert_array_equal(tile[4:, :3], maps[2].numpy())
    assert np.isnan(tile[3]).all() and np.isnan(tile[:, 3]).all()
    with pytest.raises(ValueError, match="square number of maps"):
        mosaic(torch.zeros(3, 2, 2))


def test_output_marks_sit_on_the_identity_hot_pixels():
    grid = 4
    rows = central_patches(grid)
    tile = mosaic(patch_maps(torch.eye(16), grid, rows))
    assert sorted(zip(*np.nonzero(tile == 1))) == sorted(output_marks(rows, grid))


def test_mixer_rows_are_the_strongest_hidden_units():
    w = torch.zeros(10, 16)
    w[7] = 3.0
    w[2] = -2.0
    w[5] = 1.0
    assert strongest_rows(w, 3) == [7, 2, 5]
    assert map_rows("mixer", w, 4) == [7, 2, 5, 0]  # 2x2 maps for a 4x4 grid; ties keep index order
    assert map_rows("resmlp", w, 4) == central_patches(4)


def test_patch_maps_rejects_a_matrix_without_the_grid():
    with pytest.raises(ValueError, match="no 4x4 patch grid"):
        patch_maps(torch.zeros(16, 15), 4, [0])


def test_figures_are_written_with_symmetric_per_layer_scale(tmp_path):
    tile = mosaic(patch_maps(-0.5 * torch.eye(16), 4, central_patches(4)))
    assert plot_layer(tile, tmp_path / "one.png", title="t") == pytest.approx(0.5)
    assert plot_layer(np.zeros((3, 3)), tmp_path / "zero.png", title="t") == 1.0
    plot_overview([tile, tile * 4], tmp_path / "all.png", title="t")
    for name in ("one.png", "zero.png", "all.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_offset_profile_of_identity_and_shift():
    grid = 4
    prof = offset_profile(torch.eye(16), grid)
    assert prof.shape == (5, 5) and prof[2, 2] == 1 and prof.sum() == 1  # offsets -2..2
    a = torch.diag(torch.ones(12), diagonal=4)  # output (r, c) reads input (r + 1, c): offset (+1, 0)
    prof = offset_profile(2.0 * a, grid, radius=3)
    assert prof.shape == (7, 7) and prof[4, 3] == 2.0 and prof.abs().sum() == 2.0
    torch.testing.assert_close(offset_profile(torch.full((16, 16), -0.5), grid), torch.full((5, 5), -0.5))


def test_non_square_grids_map_rows_and_offsets_where_their_patches_sit():
    h, w = 4, 6  # a 16x24 px input at patch 4
    rows = central_patches((h, w))
    assert mosaic_side((h, w)) == 2 and {(o // w, o % w) for o in rows} == {(1, 2), (1, 3), (2, 2), (2, 3)}
    maps = patch_maps(torch.eye(h * w), (h, w), rows)
    assert maps.shape == (4, h, w)
    tile = mosaic(maps)
    assert tile.shape == (2 * h + 1, 2 * w + 1)
    assert sorted(zip(*np.nonzero(tile == 1))) == sorted(output_marks(rows, (h, w)))
    a = torch.diag(torch.ones(h * w - 1), diagonal=1)  # output (r, c) reads input (r, c + 1)
    prof = offset_profile(a, (h, w))
    assert prof.shape == (5, 5) and prof[2, 3] == 1 and prof.sum() == 1
