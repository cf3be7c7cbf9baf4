"""Batch-level Mixup (Zhang et al. 2018) / CutMix (Yun et al. 2019) with label smoothing.

The DeiT recipe that ResMLP trains with (Sec. 3) mixes every batch: with probability ``prob`` one
lambda is drawn for the whole batch and each sample is mixed with its partner in the reversed batch
(``x.flip(0)``). With probability ``switch_prob`` it is CutMix (lambda ~ Beta(cutmix_alpha,
cutmix_alpha); a box of side ratio sqrt(1 - lambda), centred uniformly, clipped to the image, pasted
from the partner; lambda is then corrected to 1 - box area / image area), otherwise Mixup
(lambda ~ Beta(mixup_alpha, mixup_alpha); x = lambda x + (1 - lambda) x.flip(0)). Targets mix the
label-smoothed one-hot vectors with the same lambda.

Any batch size works: with an odd batch the middle sample is paired with itself (it stays
unchanged and its target is its own smoothed label).

Randomness: with a ``generator`` every draw derives from it; without one, from ``np.random``.
"""

from __future__ import annotations

import numpy as np
import torch

Box = tuple[int, int, int, int]  # (top, bottom, left, right), exclusive ends


def smooth_one_hot(
    y: torch.Tensor, num_classes: int, smoothing: float = 0.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """(B,) class indices -> (B, num_classes): ``1 - s + s/K`` on the true class, ``s/K`` elsewhere."""
    if not 0 <= smoothing < 1:
        raise ValueError(f"smoothing must be in [0, 1), got {smoothing}")
    off = smoothing / num_classes
    targets = torch.full((y.shape[0], num_classes), off, dtype=dtype, device=y.device)
    return targets.scatter_(1, y.long().unsqueeze(1), 1.0 - smoothing + off)


def cutmix_box(height: int, width: int, lam: float, rng) -> Box:
    """Box covering about ``1 - lam`` of the image: side ratio sqrt(1 - lam), uniform centre, clipped."""
    cut_ratio = np.sqrt(1.0 - lam)
    cut_h, cut_w = int(height * cut_ratio), int(width * cut_ratio)
    cy, cx = int(rng.randint(0, height)), int(rng.randint(0, width))
    top, bottom = np.clip([cy - cut_h // 2, cy + cut_h // 2], 0, height)
    left, right = np.clip([cx - cut_w // 2, cx + cut_w // 2], 0, width)
    return int(top), int(bottom), int(left), int(right)


class Mixup:
    """Mix a batch and return ``(x_mixed, soft targets (B, num_classes))``; inputs are not modified."""

    def __init__(
        self,
        *,
        num_classes: int,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
        generator: torch.Generator | None = None,
    ) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise ValueError(f"alphas must be >= 0, got mixup_alpha={mixup_alpha}, cutmix_alpha={cutmix_alpha}")
        for name, value in (("prob", prob), ("switch_prob", switch_prob)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing
        self.generator = generator

    def _rng(self):
        """numpy-style sampler: seeded from the torch generator if given, else the global numpy state."""
        if self.generator is None:
            return np.random
        seed = torch.randint(0, 2**32, (1,), generator=self.generator, device=self.generator.device)
        return np.random.RandomState(int(seed))

    def sample_params(self, rng) -> tuple[float, bool]:
        """Draw ``(lam, use_cutmix)`` for one batch; ``lam == 1`` means "do not mix"."""
        if (self.mixup_alpha == 0 and self.cutmix_alpha == 0) or rng.rand() >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = bool(rng.rand() < self.switch_prob)
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(rng.beta(alpha, alpha)), use_cutmix

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or y.shape != (x.shape[0],):
            raise ValueError(f"expected x (B, C, H, W) and y (B,), got {tuple(x.shape)} and {tuple(y.shape)}")
        rng = self._rng()
        lam, use_cutmix = self.sample_params(rng)
        if lam < 1.0 and use_cutmix:
            top, bottom, left, right = cutmix_box(x.shape[-2], x.shape[-1], lam, rng)
            x = x.clone()
            x[:, :, top:bottom, left:right] = x.flip(0)[:, :, top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / (x.shape[-2] * x.shape[-1])
        elif lam < 1.0:
            x = lam * x + (1.0 - lam) * x.flip(0)
        dtype = x.dtype if x.is_floating_point() else torch.float32
        soft = smooth_one_hot(y, self.num_classes, self.label_smoothing, dtype)
        return x, lam * soft + (1.0 - lam) * soft.flip(0)

    def __repr__(self) -> str:
        return (
            f"Mixup(num_classes={self.num_classes}, mixup_alpha={self.mixup_alpha}, cutmix_alpha={self.cutmix_alpha}, "
            f"prob={self.prob}, switch_prob={self.switch_prob}, label_smoothing={self.label_smoothing})"
        )
