"""Cross-patch weight maps (paper Fig. 2 / B.1): each row of A reshaped to the input-patch grid.

Row o of A = linear_tokens.weight says how much every input patch contributes to output patch o; the stem
flattens patches row-major, so reshaping the row to (h, w) puts each weight where its input patch
sits in the image. The paper shows the central 6x6 output patches of a 14x14 grid; other grids scale that.
A grid is an int (square) or (h, w) for non-square inputs.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..models.layers import to_pair

Grid = Union[int, tuple[int, int]]


def mosaic_side(grid: Grid) -> int:
    """How many output patches per side the mosaic shows: 6 for a 14x14 grid, in proportion otherwise
    (to the shorter side of a non-square grid)."""
    short = min(to_pair(grid))
    return max(1, min(short, round(6 * short / 14)))


def central_patches(grid: Grid, side: int | None = None) -> list[int]:
    """Row-major indices of the central side x side output patches."""
    h, w = to_pair(grid)
    side = mosaic_side(grid) if side is None else side
    top, left = (h - side) // 2, (w - side) // 2
    return [r * w + c for r in range(top, top + side) for c in range(left, left + side)]


def strongest_rows(matrix: torch.Tensor, count: int) -> list[int]:
    """Indices of the `count` rows with the largest L2 norm, strongest first (for Mixer's token-MLP fc1,
    whose hidden units have no position to pick central ones by)."""
    norms = matrix.detach().float().norm(dim=1)
    return torch.argsort(norms, descending=True, stable=True)[:count].tolist()


def map_rows(kind: str, matrix: torch.Tensor, grid: Grid) -> list[int]:
    """The rows a mosaic shows: central output patches for ResMLP, strongest hidden units for Mixer."""
    if kind == "resmlp":
        return central_patches(grid)
    return strongest_rows(matrix, mosaic_side(grid) ** 2)


def patch_maps(matrix: torch.Tensor, grid: Grid, rows: list[int]) -> torch.Tensor:
    """(len(rows), h, w): the chosen rows of a (R, N) matrix on the input-patch grid."""
    h, w = to_pair(grid)
    if matrix.ndim != 2 or matrix.shape[1] != h * w:
        raise ValueError(f"matrix of shape {tuple(matrix.shape)} has no {h}x{w} patch grid along dim 1")
    return matrix.detach().float().cpu()[rows].reshape(len(rows), h, w)  # (R, N) -> (R, h, w), row-major


def mosaic(maps: torch.Tensor, pad: int = 1) -> np.ndarray:
    """Tile (side*side, h, w) maps into one array, separated by NaN lines (drawn as background)."""
    count, h, w = maps.shape
    side = int(round(count**0.5))
    if side * side != count:
        raise ValueError(f"a mosaic needs a square number of maps, got {count}")
    out = np.full((side * h + (side - 1) * pad, side * w + (side - 1) * pad), np.nan, dtype=np.float32)
    for k, m in enumerate(maps.numpy()):
        r, c = divmod(k, side)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = m
    return out


def output_marks(rows: list[int], grid: Grid, pad: int = 1) -> list[tuple[int, int]]:
    """(y, x) mosaic pixel of each tile's own output patch (ResMLP), to show where "local" is."""
    h, w = to_pair(grid)
    side = int(round(len(rows) ** 0.5))
    marks = []
    for k, o in enumerate(rows):
        r, c = divmod(k, side)
        marks.append((r * (h + pad) + o // w, c * (w + pad) + o % w))
    return marks


def offset_profile(a: torch.Tensor, grid: Grid, radius: int | None = None) -> torch.Tensor:
    """(2r+1, 2r+1): mean A[o, i] over the output patches o, indexed by the input's offset i - o (centre =
    the patch itself), for offsets up to r = grid // 2 (farther offsets exist for few patch pairs, so their
    means are noise; the shorter side's for a non-square grid). A convolution-like A shows a compact
    kernel around the centre."""
    h, w = to_pair(grid)
    r = min(h, w) // 2 if radius is None else radius
    n = h * w
    row, col = torch.arange(n) // w, torch.arange(n) % w
    dr = (row[None, :] - row[:, None]).flatten()  # (N, N) -> (N*N,) offsets input - output
    dc = (col[None, :] - col[:, None]).flatten()
    keep = (dr.abs() <= r) & (dc.abs() <= r)
    index = (dr[keep] + r, dc[keep] + r)
    total = torch.zeros(2 * r + 1, 2 * r + 1).index_put_(
        index, a.detach().float().cpu().flatten()[keep], accumulate=True
    )
    count = torch.zeros_like(total).index_put_(index, torch.ones(int(keep.sum())), accumulate=True)
    return total / count  # every offset up to grid - 1 occurs for at least one output patch


def symmetric_limit(tile: np.ndarray) -> float:
    """max |w| over the shown maps (per layer), so 0 is the colormap's centre; 1.0 for all-zero maps."""
    peak = float(np.nanmax(np.abs(tile))) if np.isfinite(tile).any() else 0.0
    return peak if peak > 0 else 1.0


_CMAP = colormaps["RdBu_r"].with_extremes(bad="#aaaaaa")  # diverging, red > 0 > blue; grey separators


def _draw(ax, tile: np.ndarray, vmax: float, marks: list[tuple[int, int]] | None):
    ax.set_xticks([])
    ax.set_yticks([])
    image = ax.imshow(tile, cmap=_CMAP, vmin=-vmax, vmax=vmax, interpolation="nearest")
    for y, x in marks or []:
        ax.add_patch(Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=0.6))
    return image


def plot_layer(tile: np.ndarray, path, *, title: str, marks: list[tuple[int, int]] | None = None) -> float:
    """One layer's mosaic with a colorbar (black squares: the output patches, if `marks`); returns the
    symmetric colour limit used."""
    vmax = symmetric_limit(tile)
    fig = Figure(figsize=(4.2, 3.6), dpi=100)
    ax = fig.add_subplot()
    fig.colorbar(_draw(ax, tile, vmax, marks), ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title, fontsize=9)
    fig.savefig(path, bbox_inches="tight")
    return vmax


def plot_offsets(profiles: list[torch.Tensor], path, *, title: str) -> None:
    """Each layer's offset profile (see `offset_profile`), the centre (offset 0) outlined."""
    cols = min(len(profiles), 6)
    rows = -(-len(profiles) // cols)
    fig = Figure(figsize=(2.0 * cols, 2.15 * rows + 0.4), dpi=100)
    for layer, prof in enumerate(profiles):
        ax = fig.add_subplot(rows, cols, layer + 1)
        tile = prof.numpy()
        centre = (tile.shape[0] - 1) // 2
        _draw(ax, tile, symmetric_limit(tile), [(centre, centre)])
        ax.set_title(f"layer {layer}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, bbox_inches="tight")


def plot_overview(
    tiles: list[np.ndarray], path, *, title: str, marks: list[list[tuple[int, int]]] | None = None
) -> None:
    """Every layer's mosaic side by side, each with its own symmetric scaling."""
    cols = min(len(tiles), 6)
    rows = -(-len(tiles) // cols)
    panel = max(2.0, 3 * tiles[0].shape[0] / 100)  # about 3 screen pixels per weight at dpi 100
    fig = Figure(figsize=(panel * cols, (panel + 0.15) * rows + 0.4), dpi=100)
    for layer, tile in enumerate(tiles):
        ax = fig.add_subplot(rows, cols, layer + 1)
        _draw(ax, tile, symmetric_limit(tile), marks[layer] if marks else None)
        ax.set_title(f"layer {layer}", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, bbox_inches="tight")
