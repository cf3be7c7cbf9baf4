"""Building blocks shared by ResMLP and MLP-Mixer, named after the ResMLP paper (section 2).

Shapes: B = batch, N = number of patches (tokens), D = embedding dim (channels).
"""

from __future__ import annotations

from typing import Iterable, Sequence, Union

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


class ReLU(nn.ReLU):
    """max(x, 0). Eager, PyTorch's own; traced by torch.compile, the same values as (x + |x|) / 2. Inductor
    (CPU, torch 2.13) saves ReLU's backward mask as a bool tensor and reads and writes it element by element: a
    compiled bf16 ResMLP step with nn.ReLU ran 0.54x its eager speed, with this form 1.24x (docs/results.md,
    "The student's step, compiled"). The gradient differs only at exactly 0, where it is 1/2 instead of 0 (both
    subgradients)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            return 0.5 * (x + x.abs())
        return super().forward(x)


# The activations of the paper's Appendix A (GELU is the paper's choice, exact erf form).
ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "silu": nn.SiLU, "hardswish": nn.Hardswish, "relu": ReLU}


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


def to_pair(size: Union[int, Sequence[int]]) -> tuple[int, int]:
    """An image or grid size given as an int (square) or as (h, w) -> (h, w)."""
    if isinstance(size, int) and not isinstance(size, bool):
        return size, size
    if isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(v, int) for v in size):
        return int(size[0]), int(size[1])
    raise ValueError(f"expected a size as an int or (height, width), got {size!r}")


class PatchStem(nn.Module):
    """Split the image into non-overlapping p x p patches and project each to D dims (a strided conv).

    `img_size` is an int (square) or (height, width); `grid_size` is then an int or an (h, w) pair.
    Patches are flattened row-major, so token n = row * (W / p) + col: the cross-patch weight maps in
    the analysis module rely on this order.
    """

    def __init__(self, *, img_size: Union[int, Sequence[int]], patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.set_img_size(img_size)
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def set_img_size(self, img_size: Union[int, Sequence[int]]) -> None:
        """Take images of `img_size` from now on (the projection does not depend on it)."""
        h, w = to_pair(img_size)
        if h % self.patch_size or w % self.patch_size:
            raise ValueError(
                f"img_size={img_size} is not divisible by patch_size={self.patch_size}; "
                f"choose img_size as a multiple of {self.patch_size}"
            )
        square = h == w
        self.img_size = h if square else (h, w)
        self.grid_size = h // self.patch_size if square else (h // self.patch_size, w // self.patch_size)
        self.num_patches = (h // self.patch_size) * (w // self.patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = to_pair(self.img_size)
        expected = (self.in_chans, h, w)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            size = "..." if x.ndim != 4 else x.shape[-1] if x.shape[-2] == x.shape[-1] else tuple(x.shape[-2:])
            raise ValueError(
                f"input of shape {tuple(x.shape)} does not match the model, which expects "
                f"(B, {expected[0]}, {h}, {w}); resize/crop the images to {h}x{w}, carry the model to the "
                f"input's size with model.set_input_size({size}) (resamples the token mixing), or build it "
                f"with create_model(name, img_size={size}, in_chans=...)"
            )
        x = self.proj(x)  # (B, C, H, W) -> (B, D, H/p, W/p)
        return x.flatten(2).transpose(1, 2)  # (B, D, h, w) -> (B, N, D), row-major tokens
