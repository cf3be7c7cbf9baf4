"""Numbers behind the paper's weight analyses (section 4.2, figures 2-3, B.1-B.2): sparsity, locality and
LayerScale, per block.

Names follow the paper: A is the cross-patch matrix (linear_tokens, N x N, row o = output patch o, column
i = input patch i, patches in the stem's row-major order), B and C the channel MLP's fc1 (D -> 4D) and fc2
(4D -> D). For MLP-Mixer, A stands for the token-mixing MLP's fc1 (hidden x N): its rows have no output
patch, so only the peak-centred locality applies to them.

ResMLP's ablation variants (models.resmlp): a token MLP is analysed like Mixer's (A = its fc1); a 3x3 conv
in place of A (full, depthwise or separable) is shown as the N x N matrix it applies per channel, A[o, i] =
the RMS over channels of the kernel tap at offset position(i) - position(o) (zero beyond the 3x3), so its maps
and offset profile show the kernel; its sparsity is that of the kernel weights themselves.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import nn

from ..models import local_token_matrix
from ..models.layers import to_pair

Grid = Union[int, tuple[int, int]]  # a patch grid: an int (square) or (h, w)

SPARSITY_THRESHOLD = 0.05  # paper Fig. 3: "entries below 5% of the maximum"


def architecture(model: nn.Module) -> str:
    """'resmlp' (maps centred on output patches: A, or a conv in its place) or 'mixer' (token MLPs)."""
    block = model.blocks[0] if len(getattr(model, "blocks", [])) else None
    if hasattr(block, "linear_tokens") or hasattr(block, "conv_tokens"):
        return "resmlp"
    if hasattr(block, "mlp_tokens"):
        return "mixer"
    if getattr(block, "token_mixing", None) == "none":
        raise ValueError("this ResMLP has token_mixing='none': there are no cross-patch weights to analyse")
    raise ValueError(f"{type(model).__name__} has neither ResMLP (linear_tokens) nor Mixer (mlp_tokens) blocks")


def token_weight_name(model: nn.Module) -> str:
    """What the analysis calls A for this model, for captions."""
    block = model.blocks[0]
    if hasattr(block, "conv_tokens"):
        return f"{block.token_mixing} kernel (as an N x N matrix)"
    return "A = linear_tokens" if hasattr(block, "linear_tokens") else "token-mixing fc1"


def _token_weight(block: nn.Module) -> nn.Parameter:
    if hasattr(block, "linear_tokens"):
        return block.linear_tokens.weight
    if hasattr(block, "conv_tokens"):
        return block.conv_tokens.conv.weight  # (D, D or 1, 3, 3): the spatial kernel (pointwise mixes channels)
    return block.mlp_tokens.fc1.weight


def block_weights(model: nn.Module) -> list[dict[str, nn.Parameter]]:
    """Per block, the weight Parameters (not copies) named A, B, C as in the module docstring."""
    architecture(model)  # a clear error for models without token-mixing weights
    return [
        {"A": _token_weight(b), "B": b.mlp_channels.fc1.weight, "C": b.mlp_channels.fc2.weight} for b in model.blocks
    ]


def kernel_as_matrix(kernel: torch.Tensor, grid: Grid) -> torch.Tensor:
    """(N, N): the per-channel RMS of a (D, D or 1, k, k) conv kernel laid out as A (rows = output patches)."""
    taps = kernel.detach().float().cpu().pow(2).mean(dim=(0, 1)).sqrt()  # (k, k)
    return local_token_matrix(taps, *to_pair(grid))


def block_matrices(model: nn.Module) -> list[dict[str, torch.Tensor]]:
    """`block_weights` as detached float32 CPU tensors, A always as an N x N (or hidden x N) matrix."""
    grid = model.stem.grid_size
    out = []
    for ws in block_weights(model):
        mats = {k: w.detach().float().cpu() for k, w in ws.items()}
        if mats["A"].ndim == 4:
            mats["A"] = kernel_as_matrix(mats["A"], grid)
        out.append(mats)
    return out


def sparsity(weight: torch.Tensor, threshold: float = SPARSITY_THRESHOLD) -> float:
    """Fraction of entries with |w| < threshold * max|w| (an all-zero matrix counts as fully sparse)."""
    w = weight.detach().abs().float()
    peak = w.max()
    if peak == 0:
        return 1.0
    return float((w < threshold * peak).float().mean())


def patch_distances(grid: Grid, metric: str = "chebyshev") -> torch.Tensor:
    """(N, N) grid distance between patches o and i on an h x w grid (`grid` an int for h = w), N = h * w,
    row-major: patch n sits at (n // w, n % w).

    Chebyshev (max(|dr|, |dc|)) makes the 3x3 neighbourhood exactly "distance <= 1".
    """
    h, w = to_pair(grid)
    n = torch.arange(h * w)
    dr = (n[:, None] // w - n[None, :] // w).abs().float()
    dc = (n[:, None] % w - n[None, :] % w).abs().float()
    if metric == "chebyshev":
        return torch.maximum(dr, dc)
    if metric == "euclidean":
        return torch.sqrt(dr**2 + dc**2)
    raise ValueError(f"unknown distance {metric!r}; expected 'chebyshev' or 'euclidean'")


def _weighted(w: torch.Tensor, dist: torch.Tensor) -> tuple[float | None, float | None]:
    """|w|-weighted mean of `dist` and |w| share at dist <= 1; None for an all-zero matrix."""
    total = w.sum()
    if total == 0:
        return None, None
    return float((w * dist).sum() / total), float((w * (dist <= 1)).sum() / total)


def locality(a: torch.Tensor, grid: Grid) -> dict[str, float | None]:
    """How local the cross-patch matrix A is: |A|-weighted mean distance between output and input patch
    (Chebyshev and Euclidean), the share of |A| inside each output patch's 3x3 neighbourhood, and the
    fraction of output patches whose largest |A| entry lies in that neighbourhood.

    Identity A gives 0 and 1.0; A mixing each patch only with a direct neighbour gives 1 and 1.0.
    """
    h, w_ = to_pair(grid)
    n = h * w_
    if tuple(a.shape) != (n, n):
        raise ValueError(f"A has shape {tuple(a.shape)}, expected ({n}, {n}) for a {h}x{w_} patch grid")
    w = a.detach().abs().float()
    cheb = patch_distances(grid, "chebyshev")
    mean_cheb, share = _weighted(w, cheb)
    mean_euc, _ = _weighted(w, patch_distances(grid, "euclidean"))
    # Robust to a diffuse background: does each output patch's strongest input lie in its 3x3 window?
    # (All-zero rows have no strongest input and are left out.)
    rows = w.sum(dim=1) > 0
    near = cheb[torch.arange(n), w.argmax(dim=1)] <= 1
    peak_near = float(near[rows].float().mean()) if rows.any() else None
    return {
        "mean_distance": mean_cheb,
        "mean_distance_euclidean": mean_euc,
        "share_3x3": share,
        "peak_in_3x3": peak_near,
    }


def peak_locality(rows: torch.Tensor, grid: Grid) -> dict[str, float | None]:
    """Locality of maps that have no output patch (Mixer's token-MLP fc1 rows): distances are measured
    from each row's own peak |w| patch. Applies to ResMLP's A too, so the two can be compared."""
    h, w_ = to_pair(grid)
    n = h * w_
    if rows.ndim != 2 or rows.shape[1] != n:
        raise ValueError(f"maps have shape {tuple(rows.shape)}, expected (rows, {n}) for a {h}x{w_} grid")
    w = rows.detach().abs().float()
    dist = patch_distances(grid, "chebyshev")[w.argmax(dim=1)]  # (rows, N): distance from each row's peak
    mean, share = _weighted(w, dist)
    return {"peak_mean_distance": mean, "peak_share_3x3": share}


def layer_scale(model: nn.Module) -> list[dict[str, float]]:
    """Mean |LayerScale| per block: ls1 (after the cross-patch sublayer) and ls2 (after the MLP); [] for Mixer."""
    if not all(hasattr(b, "ls1") for b in model.blocks):
        return []
    return [
        {"ls1": float(b.ls1.detach().abs().mean()), "ls2": float(b.ls2.detach().abs().mean())} for b in model.blocks
    ]


def layer_stats(model: nn.Module, threshold: float = SPARSITY_THRESHOLD) -> list[dict]:
    """Per block: sparsity of A, B, C; locality of A (output-centred for ResMLP, peak-centred for both)."""
    grid = model.stem.grid_size
    arch = architecture(model)
    out = []
    for ws, params in zip(block_matrices(model), block_weights(model)):
        loc = locality(ws["A"], grid) if arch == "resmlp" else {}
        out.append(
            {
                "sparsity": {k: sparsity(w, threshold) for k, w in params.items()},  # of the weights themselves
                "locality": {**loc, **peak_locality(ws["A"], grid)},
            }
        )
    return out
