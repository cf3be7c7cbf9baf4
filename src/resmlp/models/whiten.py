"""Data-dependent init of the patch stem (the linear patch projection before the first ResMLP block, or
the conv net's 2 x 2 stem conv).

The stem is a p x p conv: one linear map from a patch vector (C*p*p = P values) to D channels.
Setting its rows to the whitening transform of the training patches gives the blocks decorrelated,
unit-variance, centred inputs from step 0, a trick that speeds up short CIFAR-10 runs of convnets
(Coates & Ng 2011; the airbench speedruns, which also use +w / -w rows and a frozen whitened stem).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

WHITENINGS = ("pca", "zca")


def patch_vectors(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B * L, C*p*p) non-overlapping patches, flattened in the conv weight's (c, i, j) order."""
    cols = F.unfold(images, kernel_size=patch_size, stride=patch_size)  # (B, C*p*p, L)
    return cols.transpose(1, 2).flatten(0, 1)  # (B, P, L) -> (B*L, P)


def whitening_matrix(patches: torch.Tensor, *, eps: float, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, P) patches -> (W, mean) in float64 with W @ cov @ W.T ~ I (exact for eps = 0).

    PCA: W = diag(1/sqrt(l + eps)) U^T, rows sorted by decreasing eigenvalue l (U = eigenvectors).
    ZCA: W = U diag(1/sqrt(l + eps)) U^T, the symmetric whitening, closest to the identity map.
    """
    if kind not in WHITENINGS:
        raise ValueError(f"unknown whitening {kind!r}; choose one of: {', '.join(WHITENINGS)}")
    x = patches.double()
    mean = x.mean(dim=0)
    x = x - mean
    cov = x.T @ x / (x.shape[0] - 1)  # (P, P), unbiased like torch.cov
    evals, evecs = torch.linalg.eigh(cov)  # ascending
    evals, evecs = evals.flip(0).clamp_min(0.0), evecs.flip(1)  # descending; clamp round-off negatives
    w = evecs.T / (evals + eps).sqrt()[:, None]  # (P, P): row i = u_i / sqrt(l_i + eps)
    if kind == "zca":
        w = evecs @ w
    return w, mean


def whiten_patch_embedding(
    model: nn.Module, images: torch.Tensor, *, eps: float = 5e-4, kind: str = "pca"
) -> nn.Module:
    """Fit the stem `model.stem.proj` (a p x p Conv2d without padding: ResMLP's stride-p patch projection,
    or the conv net's stride-1 2 x 2 stem) to whiten the p x p patches of `images`.

    `images`: a few thousand *normalised* training images (B, C, H, W), as the model sees them; eps is in
    those units (it damps the noisiest, smallest-variance directions). The first min(D, P) output
    channels become the whitened patch coordinates with bias = -W @ mean, so they are centred; if D > P
    the next P channels are their negations (+w and -w, so the GELUs downstream see both signs), and
    any channels left keep their current (default) init. If D < P, PCA keeps the top-variance directions;
    ZCA needs D >= P. Modifies the model in place and returns it.
    """
    proj = getattr(getattr(model, "stem", None), "proj", None)
    if (
        not isinstance(proj, nn.Conv2d)
        or proj.kernel_size[0] != proj.kernel_size[1]
        or proj.padding != (0, 0)
        or proj.dilation != (1, 1)
        or proj.groups != 1
    ):
        raise ValueError(
            f"stem whitening needs a patch stem (model.stem.proj: a square Conv2d without padding, "
            f"dilation or groups); {type(model).__name__} has none"
        )
    p = proj.kernel_size[0]
    if images.ndim != 4 or images.shape[1] != proj.in_channels:
        raise ValueError(f"images must be (B, {proj.in_channels}, H, W), got {tuple(images.shape)}")
    d, n_in = proj.out_channels, proj.in_channels * p * p
    if kind == "zca" and d < n_in:
        raise ValueError(f"ZCA whitening needs embed_dim >= patch dim C*p*p = {n_in}, got {d}; use kind='pca'")
    w, mean = whitening_matrix(patch_vectors(images, p), eps=eps, kind=kind)
    w = w[:d]  # PCA with D < P: the top-eigenvalue rows
    rows = torch.cat([w, -w])[:d]  # (min(D, 2P), P)
    with torch.no_grad():
        weight = proj.weight.view(d, n_in)  # (D, C, p, p) -> (D, P), same (c, i, j) order as patch_vectors
        weight[: len(rows)] = rows.to(weight)
        if proj.bias is not None:
            proj.bias[: len(rows)] = (-rows @ mean).to(proj.bias)
    return model


def freeze_stem(model: nn.Module, frozen: bool = True) -> nn.Module:
    """Stop (or resume) training the stem, e.g. after whitening; call before building the optimiser,
    whose parameter groups skip parameters with requires_grad = False."""
    for param in model.stem.parameters():
        param.requires_grad_(not frozen)
    return model
