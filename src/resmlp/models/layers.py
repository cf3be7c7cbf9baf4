"""Building blocks shared by ResMLP and MLP-Mixer, named after the ResMLP paper (section 2).

Shapes: B = batch, N = number of patches (tokens), D = embedding dim (channels).
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


class Affine(nn.Module):
    """Aff_{alpha,beta}(x) = alpha * x + beta, per channel (paper eq. 1).

    ResMLP's replacement for LayerNorm: no batch or token statistics, so it can be folded into the
    neighbouring linear layer at inference. Parameters are stored as (1, 1, D) like timm's checkpoints.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta, self.alpha, x)


class DropPath(nn.Module):
    """Stochastic depth (Huang et al. 2016): drop the whole residual branch per sample while training."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= drop_prob < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_prob}")
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"


# The activations of the paper's Appendix A (GELU is the paper's choice, exact erf form).
ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "silu": nn.SiLU, "hardswish": nn.Hardswish,
                                           "relu": nn.ReLU}


def check_choice(option: str, value: str, choices: Iterable[str]) -> str:
    """`value` if it is one of `choices`, else a ValueError naming the option and the valid values."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"unknown {option} {value!r}; choose one of: {', '.join(choices)}")
    return value


class Mlp(nn.Module):
    """Two-layer perceptron fc1 -> activation (GELU, exact erf form, by default) -> fc2, on the last dimension."""

    def __init__(self, in_features: int, hidden_features: int, act: str = "gelu") -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = ACTIVATIONS[check_choice("act", act, ACTIVATIONS)]()
        self.fc2 = nn.Linear(hidden_features, in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the D channels of (B, N, D) tokens (statistics over batch and patches)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.transpose(1, 2)).transpose(1, 2)  # (B, N, D) -> (B, D, N) -> back


# The pre-normalisations of the paper's Appendix A: Aff (the paper's), LayerNorm, BatchNorm.
NORMS = ("affine", "layernorm", "batchnorm")


def make_norm(kind: str, dim: int) -> nn.Module:
    """The per-token normalisation `kind` over D channels of (B, N, D) tokens."""
    check_choice("norm", kind, NORMS)
    if kind == "affine":
        return Affine(dim)
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=1e-6)
    return TokenBatchNorm(dim)


class PatchStem(nn.Module):
    """Split the image into non-overlapping p x p patches and project each to D dims (a strided conv).

    Patches are flattened row-major, so token n = row * (W / p) + col: the cross-patch weight maps in
    the analysis module rely on this order.
    """

    def __init__(self, *, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        if img_size % patch_size != 0:
            raise ValueError(
                f"img_size={img_size} is not divisible by patch_size={patch_size}; "
                f"choose img_size as a multiple of {patch_size}"
            )
        self.img_size = img_size
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        expected = (self.in_chans, self.img_size, self.img_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"input of shape {tuple(x.shape)} does not match the model, which expects "
                f"(B, {expected[0]}, {expected[1]}, {expected[2]}); resize/crop the images to "
                f"{self.img_size}x{self.img_size} or build the model with "
                f"create_model(name, img_size={x.shape[-1] if x.ndim == 4 else '...'}, in_chans=...)"
            )
        x = self.proj(x)  # (B, C, H, W) -> (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, N, D), row-major tokens
