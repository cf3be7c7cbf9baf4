"""Random Erasing (Zhong et al. 2017) on normalised CHW tensors, as in the DeiT/ResMLP recipe.

With probability ``probability`` the image gets ``count`` rectangles (``min_count <= count <=
max_count``). Each rectangle tries up to 10 times to sample an area fraction ``U(min_area,
max_area) / count`` and a log-uniform aspect ratio (h / w) in ``[min_aspect, max_aspect]``; it is
placed uniformly where it fits strictly inside the image, and skipped if no attempt fits.

Fill modes (the image is already normalised, so N(0, 1) matches the data's scale):
``"pixel"`` per-pixel N(0, 1) noise, ``"rand"`` one N(0, 1) value per channel, ``"const"`` zeros.

Randomness: probability, boxes from ``random``; fill noise from the default torch generator.
"""

from __future__ import annotations

import math
import random

import torch

MODES = ("pixel", "rand", "const")
MAX_ATTEMPTS = 10


class RandomErasing:
    """Erase random rectangles of a normalised (C, H, W) or (B, C, H, W) tensor; returns a new tensor."""

    def __init__(
        self,
        probability: float = 0.25,
        mode: str = "pixel",
        min_area: float = 0.02,
        max_area: float = 1 / 3,
        min_aspect: float = 0.3,
        max_aspect: float | None = None,
        min_count: int = 1,
        max_count: int | None = None,
    ) -> None:
        max_aspect = 1 / min_aspect if max_aspect is None and min_aspect > 0 else max_aspect
        max_count = min_count if max_count is None else max_count
        _check_args(probability, mode, min_area, max_area, min_aspect, max_aspect, min_count, max_count)
        self.probability = probability
        self.mode = mode
        self.min_area = min_area
        self.max_area = max_area
        self.log_aspect = (math.log(min_aspect), math.log(max_aspect))
        self.min_count = min_count
        self.max_count = max_count

    def get_params(self, height: int, width: int, count: int = 1) -> tuple[int, int, int, int] | None:
        """Sample one box ``(top, left, h, w)`` for an image with ``count`` boxes, or None if none fits."""
        for _ in range(MAX_ATTEMPTS):
            target_area = random.uniform(self.min_area, self.max_area) * height * width / count
            aspect = math.exp(random.uniform(*self.log_aspect))
            h = int(round(math.sqrt(target_area * aspect)))
            w = int(round(math.sqrt(target_area / aspect)))
            if 0 < h < height and 0 < w < width:
                return random.randint(0, height - h), random.randint(0, width - w), h, w
        return None

    def _fill(self, channels: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        if self.mode == "pixel":
            return torch.empty((channels, h, w), dtype=torch.float32).normal_().to(like)
        if self.mode == "rand":
            return torch.empty((channels, 1, 1), dtype=torch.float32).normal_().to(like)
        return torch.zeros((channels, 1, 1), dtype=like.dtype, device=like.device)

    def _erase(self, img: torch.Tensor) -> None:
        # In place on ``img`` (C, H, W), which the caller has already copied.
        if random.random() > self.probability:
            return
        channels, height, width = img.shape
        count = self.min_count if self.min_count == self.max_count else random.randint(self.min_count, self.max_count)
        for _ in range(count):
            box = self.get_params(height, width, count)
            if box is not None:
                top, left, h, w = box
                img[:, top : top + h, left : left + w] = self._fill(channels, h, w, img)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        if img.ndim not in (3, 4):
            raise ValueError(f"RandomErasing expects (C, H, W) or (B, C, H, W), got shape {tuple(img.shape)}")
        out = img.clone()
        for sample in out if out.ndim == 4 else (out,):
            self._erase(sample)
        return out

    def __repr__(self) -> str:
        count = f"{self.min_count}..{self.max_count}"
        return f"RandomErasing(probability={self.probability}, mode={self.mode!r}, count={count})"


def _check_args(probability, mode, min_area, max_area, min_aspect, max_aspect, min_count, max_count) -> None:
    if not 0 <= probability <= 1:
        raise ValueError(f"probability must be in [0, 1], got {probability}")
    if mode not in MODES:
        raise ValueError(f"unknown RandomErasing mode {mode!r}; valid modes: {list(MODES)}")
    if not 0 < min_area <= max_area <= 1:
        raise ValueError(f"need 0 < min_area <= max_area <= 1, got min_area={min_area}, max_area={max_area}")
    if not 0 < min_aspect <= max_aspect:
        raise ValueError(f"need 0 < min_aspect <= max_aspect, got min_aspect={min_aspect}, max_aspect={max_aspect}")
    if not 1 <= min_count <= max_count:
        raise ValueError(f"need 1 <= min_count <= max_count, got min_count={min_count}, max_count={max_count}")
