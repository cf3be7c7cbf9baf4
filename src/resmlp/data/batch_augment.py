"""CIFAR-style augmentation on whole batches (`data.batch_augment`): zero-pad + random crop, horizontal flip
and normalisation of a uint8 (B, 3, H, W) batch in a few tensor operations, on the training device.

The per-image pipeline (`transforms.RandomCropPad` -> `RandomHorizontalFlip` -> `ToTensorNormalize`) draws
the same distribution, one image at a time in the loader. On a 2-core CPU that loader shares the cores with
the training step (and reseeds three generators per image for exact resume); here the loader only gathers
uint8 images and the random part runs as one indexed gather: 1.30x the training images/s at 32 px, 1.39x at
progressive resizing's 24 px (docs/results.md#recipe-levers). The fast-CIFAR trainings (e.g. cifar10-airbench) augment
this way, on the GPU.

Randomness comes from one `torch.Generator` (the run checkpoints its state, so a resumed run draws the same
crops). Progressive resizing's smaller sizes (`with_output_size`) are reached as in the per-image pipeline:
mode "crop" cuts a random window of the augmented image at full scale, "resize" shrinks it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..models.layers import to_pair
from .transforms import OUTPUT_MODES, Size


class ToUint8Tensor:
    """The per-image part of batch augmentation: a PIL image -> uint8 (3, H, W) at `size` (an image of
    another size is resized first, as `RandomCropPad` does), so images batch together."""

    def __init__(self, size: Size, resample: Image.Resampling = Image.Resampling.BICUBIC) -> None:
        self.height, self.width = to_pair(size)
        self.resample = resample

    def __call__(self, img: Image.Image) -> torch.Tensor:
        img = img.convert("RGB") if img.mode != "RGB" else img
        if img.size != (self.width, self.height):
            img = img.resize((self.width, self.height), self.resample)
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)

    def __repr__(self) -> str:
        return f"ToUint8Tensor(size=({self.height}, {self.width}))"


@dataclass(frozen=True)
class BatchAugment:
    """uint8 (B, 3, H, W) -> float32 (B, 3, h, w): pad `padding` zeros, random H x W crop, flip with
    probability `hflip`, normalise with `mean`/`std` (of [0, 1] pixels), then reach `output_size` (None: H x W)
    by `mode`. All draws come from `generator`."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    padding: int = 4
    hflip: float = 0.5
    output_size: Optional[tuple[int, int]] = None
    mode: str = "crop"
    generator: Optional[torch.Generator] = dataclasses.field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.padding < 0:
            raise ValueError(f"padding must be >= 0, got {self.padding}")
        if not 0 <= self.hflip <= 1:
            raise ValueError(f"hflip must be in [0, 1], got {self.hflip}")
        if self.mode not in OUTPUT_MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid: {list(OUTPUT_MODES)}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ValueError(f"mean and std need 3 values, std positive; got mean={self.mean}, std={self.std}")

    def with_output_size(self, size: Optional[Size], mode: Optional[str] = None) -> "BatchAugment":
        """The same augmentation ending at `size` (None: the input size), reached by `mode`."""
        return dataclasses.replace(self, output_size=None if size is None else to_pair(size), mode=mode or self.mode)

    def _randint(self, high: int, count: int) -> torch.Tensor:
        """`count` integers uniform in [0, high] (inclusive)."""
        return torch.randint(0, high + 1, (count,), generator=self.generator)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.views(images)[0]

    def views(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(the augmented batch, the full-size augmented images it came from). They differ only at a smaller
        `output_size` (progressive resizing): the first is then a random window of the second (mode "crop") or
        a shrunk copy (mode "resize"); a distillation teacher may see the second (`distill.teacher_view: full`)."""
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected a uint8 (B, 3, H, W) batch, got {images.dtype} {tuple(images.shape)}")
        b, _, height, width = images.shape
        out_h, out_w = self.output_size or (height, width)
        window = (out_h, out_w) if self.mode == "crop" else (height, width)
        if window[0] > height or window[1] > width:
            raise ValueError(f"cannot crop {window[0]}x{window[1]} out of {height}x{width} images")
        p = self.padding
        # The pad-and-crop offset, plus (mode "crop") the offset of the smaller window inside that crop:
        # drawn separately so the offsets are distributed as in the per-image pipeline.
        pad_top, win_top = self._randint(2 * p, b), self._randint(height - window[0], b)
        pad_left, win_left = self._randint(2 * p, b), self._randint(width - window[1], b)
        flip = torch.rand(b, generator=self.generator) < self.hflip
        padded = F.pad(images, (p, p, p, p)) if p else images  # (B, 3, H + 2p, W + 2p), zeros = black
        x = self._normalised_crops(padded, pad_top + win_top, pad_left + win_left, window, flip)
        if self.mode == "resize" and (out_h, out_w) != (height, width):
            x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", antialias=True, align_corners=False)
        if (out_h, out_w) == (height, width):
            return x, x
        # The full crop, flipped alike: the window reads the same pixels inside it.
        return x, self._normalised_crops(padded, pad_top, pad_left, (height, width), flip)

    def _normalised_crops(
        self, padded: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: tuple[int, int], flip: torch.Tensor
    ) -> torch.Tensor:
        """(B, 3, h, w) float windows of `padded` at (top, left), mirrored where `flip`, normalised."""
        device = padded.device
        rows = top.to(device)[:, None] + torch.arange(size[0], device=device)  # (B, h)
        cols = left.to(device)[:, None] + torch.arange(size[1], device=device)  # (B, w)
        cols = torch.where(flip.to(device)[:, None], cols.flip(1), cols)  # a flipped window reads right to left
        batch = torch.arange(padded.shape[0], device=device)[:, None, None]
        crops = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (B, h, w, 3)
        x = crops.permute(0, 3, 1, 2).float()  # (B, h, w, 3) -> (B, 3, h, w)
        mean = torch.tensor(self.mean, device=device).view(1, 3, 1, 1) * 255.0
        scale = 1.0 / (torch.tensor(self.std, device=device).view(1, 3, 1, 1) * 255.0)
        return ((x - mean) * scale).contiguous()


__all__ = ["BatchAugment", "ToUint8Tensor"]
