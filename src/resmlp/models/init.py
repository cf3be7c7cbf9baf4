"""Structured initialisation of ResMLP's cross-patch matrix A (`blocks[i].linear_tokens`).

The paper (Sec. 4, Fig. 2) shows that trained A matrices are local and conv-like: each output patch
mostly reads its own position and a few neighbours, with a similar pattern at every position. Starting A
there, rather than from trunc-normal(0.02) noise, spares the optimiser from discovering locality, which
matters most on short schedules and small data (CIFAR-10).

A is N x N over the h x w patch grid, tokens row-major (token n = row * w + col, see `PatchStem`);
row = output patch, column = input patch.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

TOKEN_MIXING_INITS = ("default", "identity", "local")


def grid_shape(model: nn.Module) -> tuple[int, int]:
    """(h, w) of the patch grid; `stem.grid_size` is an int for square grids, or an (h, w) pair."""
    grid = model.stem.grid_size
    return (grid, grid) if isinstance(grid, int) else (int(grid[0]), int(grid[1]))


def local_token_matrix(kernel: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """The (h*w, h*w) matrix A that applies `kernel` (k x k, k odd) at every patch, zero-padded at the
    borders: (A @ x.flatten())[n] equals a 'same' cross-correlation of the h x w map x (as `F.conv2d`).

    A[out, in] = kernel[r + di, r + dj] where (di, dj) = position(in) - position(out), |di|, |dj| <= r.
    """
    k = kernel.shape[-1]
    if kernel.ndim != 2 or kernel.shape[0] != k or k % 2 == 0:
        raise ValueError(f"kernel must be a square k x k tensor with odd k, got shape {tuple(kernel.shape)}")
    r = k // 2
    rows = torch.arange(h).repeat_interleave(w)  # (N,) row of each token
    cols = torch.arange(w).repeat(h)  # (N,) column of each token
    di = rows[None, :] - rows[:, None]  # (N_out, N_in) row offset input - output
    dj = cols[None, :] - cols[:, None]
    inside = (di.abs() <= r) & (dj.abs() <= r)
    a = kernel[(di + r).clamp(0, k - 1), (dj + r).clamp(0, k - 1)]  # (N, N) gather; outside masked below
    return torch.where(inside, a, torch.zeros((), dtype=kernel.dtype))


def local_kernel(
    kernel_size: int, *, neighbour_std: float, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Centre 1, other taps ~ N(0, neighbour_std^2): the identity plus a small random neighbourhood."""
    kernel = torch.randn(kernel_size, kernel_size, generator=generator) * neighbour_std
    kernel[kernel_size // 2, kernel_size // 2] = 1.0
    return kernel


def init_token_mixing(
    model: nn.Module,
    kind: str,
    *,
    generator: Optional[torch.Generator] = None,
    kernel_size: int = 3,
    neighbour_std: float = 0.1,
) -> nn.Module:
    """Set every block's A (and its bias, to 0) in place; returns `model` for chaining.

    kind: "default" leaves the paper's trunc-normal(0.02) init; "identity" sets A = I (each patch starts
    by reading only itself); "local" sets A to a translation-invariant k x k kernel (`local_kernel`), one
    random kernel per block drawn from `generator`.
    """
    if kind not in TOKEN_MIXING_INITS:
        raise ValueError(f"unknown token-mixing init {kind!r}; choose one of: {', '.join(TOKEN_MIXING_INITS)}")
    if kind == "default":
        return model
    blocks = getattr(model, "blocks", None)
    if blocks is None or not all(hasattr(b, "linear_tokens") for b in blocks):
        mixing = getattr(blocks[0], "token_mixing", None) if blocks else None
        has = f"token_mixing={mixing!r}" if mixing else type(model).__name__
        raise ValueError(
            f"token-mixing init {kind!r} applies to ResMLP's linear_tokens (one N x N matrix A per "
            f"block, token_mixing='linear'); this model has {has}"
        )
    h, w = grid_shape(model)
    for block in blocks:
        if kind == "identity":
            a = torch.eye(h * w)
        else:
            a = local_token_matrix(local_kernel(kernel_size, neighbour_std=neighbour_std, generator=generator), h, w)
        with torch.no_grad():
            block.linear_tokens.weight.copy_(a)
            block.linear_tokens.bias.zero_()
    return model
