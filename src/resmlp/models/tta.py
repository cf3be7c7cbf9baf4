"""Test-time augmentation: average a classifier's logits over flipped and shifted views of each image.

Horizontal flips and small translations are the train-time augmentations for CIFAR (ResMLP Sec. 3
follows DeiT's recipe), so the model is near-invariant to them and averaging over them cancels part of
its errors at a cost of one forward pass per view. A shift matters for a patch model: a 1 px move
re-cuts every p x p patch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

# Inner-model metadata that callers read off the model (evaluation, checkpoints, reports).
_FORWARDED = ("num_classes", "embed_dim", "spec")


def tta_views(spec: str) -> tuple[bool, int]:
    """Parse "none", "flip", "shift<k>" or "flip+shift<k>" into (flip, shifts) for `TestTimeAugment`."""
    flip, shifts = False, 0
    parts = [] if spec == "none" else spec.split("+")
    for part in parts:
        if part == "flip" and not flip:
            flip = True
        elif part.startswith("shift") and part[5:].isdigit() and int(part[5:]) > 0 and not shifts:
            shifts = int(part[5:])
        else:
            raise ValueError(
                f"bad test-time augmentation {spec!r} at {part!r}; use 'none', 'flip', 'shift<k>' "
                f"or 'flip+shift<k>' (k >= 1 pixels)"
            )
    return flip, shifts


def view_list(flip: bool, shifts: int) -> list[tuple[bool, int, int]]:
    """The (mirrored, dy, dx) views `TestTimeAugment` averages over."""
    offsets = [(0, 0)] + ([(shifts, shifts), (-shifts, -shifts)] if shifts else [])
    return [(f, dy, dx) for f in ([False, True] if flip else [False]) for dy, dx in offsets]


def tta_view_count(spec: str) -> int:
    """How many forward passes `with_tta(model, spec)` makes per image (1, 2, 3 or 6)."""
    return len(view_list(*tta_views(spec)))


def shift_image(images: torch.Tensor, dy: int, dx: int, padding_mode: str = "reflect") -> torch.Tensor:
    """Translate (B, C, H, W) images by (dy, dx) px (down/right positive): out[i, j] = in[i - dy, j - dx],
    the uncovered border filled by `padding_mode` ('reflect' or 'replicate'), cropped back to H x W."""
    k = max(abs(dy), abs(dx))
    if k == 0:
        return images
    padded = F.pad(images, (k, k, k, k), mode=padding_mode)  # (B, C, H + 2k, W + 2k)
    h, w = images.shape[-2:]
    return padded[..., k - dy : k - dy + h, k - dx : k - dx + w]


class TestTimeAugment(nn.Module):
    """Wrap a classifier: logits = mean over views of inner(view(images)).

    Views: the image, its horizontal flip (flip=True), and for shifts = k each of those translated by
    (+k, +k) and (-k, -k) px, i.e. 1, 2, 3 or 6 views. Shifted borders are filled by reflection: unlike
    zeros (which, on normalised inputs, is the mean colour, not the black train-time padding), a reflected
    strip is real image content, so the view stays close to the training distribution whatever the
    normalisation. The wrapped model is `.inner`; `num_classes`, `spec` and the other `_FORWARDED`
    attributes read through to it. Save `.inner`'s state dict, not this module's.
    """

    __test__ = False  # not a pytest class, despite the name

    def __init__(self, inner: nn.Module, *, flip: bool = True, shifts: int = 0, padding_mode: str = "reflect") -> None:
        super().__init__()
        if shifts < 0:
            raise ValueError(f"shifts must be >= 0 pixels, got {shifts}")
        if padding_mode not in ("reflect", "replicate"):
            raise ValueError(f"padding_mode must be 'reflect' or 'replicate', got {padding_mode!r}")
        self.inner = inner
        self.padding_mode = padding_mode
        self.views = view_list(flip, shifts)

    def view(self, images: torch.Tensor, flip: bool, dy: int, dx: int) -> torch.Tensor:
        x = images.flip(-1) if flip else images  # (B, C, H, W), mirrored along W
        return shift_image(x, dy, dx, self.padding_mode)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # One view at a time: peak memory of a single forward pass.
        total = sum(self.inner(self.view(images, *v)) for v in self.views)
        return total / len(self.views)

    def __getattr__(self, name: str) -> Any:
        if name in _FORWARDED:
            return getattr(self.inner, name)
        return super().__getattr__(name)

    def extra_repr(self) -> str:
        return f"views={len(self.views)}, padding_mode={self.padding_mode!r}"


def with_tta(model: nn.Module, spec: str) -> nn.Module:
    """`model` wrapped for the views named by `spec` (see `tta_views`); `model` itself for "none"."""
    flip, shifts = tta_views(spec)
    return TestTimeAugment(model, flip=flip, shifts=shifts) if flip or shifts else model
