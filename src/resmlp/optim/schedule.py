"""Per-iteration learning-rate schedule: linear warmup, then a cosine (the paper's) or linear decay; and the
DeiT lr scaling rule."""

from __future__ import annotations

import math
from typing import Any

import torch


def scale_lr(base_lr: float, global_batch: int, reference_batch: int = 512) -> float:
    """DeiT's linear scaling rule: ``base_lr * global_batch / reference_batch``.

    DeiT (Touvron et al. 2021) and ResMLP quote the lr for a batch of 512 and scale it linearly
    with the global (all-device) batch size.
    """
    if global_batch <= 0 or reference_batch <= 0:
        raise ValueError(
            f"scale_lr: batch sizes must be > 0, got global_batch={global_batch}, reference_batch={reference_batch}"
        )
    return base_lr * global_batch / reference_batch


DECAYS = ("cosine", "linear")


def cosine_warmup_lr(
    step: int,
    *,
    base_lr: float,
    total_steps: int,
    warmup_steps: int,
    warmup_lr: float = 1e-6,
    min_lr: float = 1e-5,
    decay: str = "cosine",
) -> float:
    """Learning rate at iteration ``step`` (0-based).

    ``step < warmup_steps``: linear from ``warmup_lr`` (step 0) towards ``base_lr`` (reached at
    ``step == warmup_steps``). Then from ``base_lr`` to ``min_lr``, reached at ``step == total_steps``
    and held afterwards: along a half cosine (``decay="cosine"``) or a straight line (``"linear"``, timm's
    ``poly`` schedule with power 1). When ``warmup_steps >= total_steps`` the schedule is warmup only,
    then ``min_lr`` from ``total_steps`` on.
    """
    if decay not in DECAYS:
        raise ValueError(f"cosine_warmup_lr: decay must be one of {list(DECAYS)}, got {decay!r}")
    if step < warmup_steps:
        return warmup_lr + (base_lr - warmup_lr) * step / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / (total_steps - warmup_steps)
    remaining = 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr + (base_lr - min_lr) * remaining


class CosineWarmupSchedule:
    """Sets the optimizer's lr every iteration following :func:`cosine_warmup_lr` (``decay``: the
    paper's cosine, or linear).

    Construction sets lr(0); call :meth:`step` once after every ``optimizer.step()``. With
    ``base_lr=None`` each group's peak lr is its ``lr`` at construction (so groups may differ);
    a float gives every group the same peak. ``warmup_lr`` and ``min_lr`` are shared by all groups.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        *,
        total_steps: int,
        warmup_steps: int,
        base_lr: float | None = None,
        warmup_lr: float = 1e-6,
        min_lr: float = 1e-5,
        decay: str = "cosine",
    ) -> None:
        if decay not in DECAYS:
            raise ValueError(f"CosineWarmupSchedule: decay must be one of {list(DECAYS)}, got {decay!r}")
        if total_steps <= 0:
            raise ValueError(f"CosineWarmupSchedule: total_steps must be > 0, got {total_steps}")
        if warmup_steps < 0:
            raise ValueError(f"CosineWarmupSchedule: warmup_steps must be >= 0, got {warmup_steps}")
        self.optimizer = optimizer
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.warmup_lr = warmup_lr
        self.min_lr = min_lr
        self.decay = decay
        self.base_lrs = [float(group["lr"]) if base_lr is None else float(base_lr) for group in optimizer.param_groups]
        self.last_step = 0
        self._apply()

    def lr_at(self, step: int, group: int = 0) -> float:
        """The lr that parameter group ``group`` gets at iteration ``step``."""
        return cosine_warmup_lr(
            step,
            base_lr=self.base_lrs[group],
            total_steps=self.total_steps,
            warmup_steps=self.warmup_steps,
            warmup_lr=self.warmup_lr,
            min_lr=self.min_lr,
            decay=self.decay,
        )

    def step(self) -> None:
        """Advance one iteration and set the new lr on every group."""
        self.last_step += 1
        self._apply()

    def end_at(self, total_steps: int) -> None:
        """End the schedule at ``total_steps`` instead, earlier or later (when a time budget cannot fit the
        plan, or fits more of it), so the lr still anneals fully. The warmup is capped at a quarter of the new
        length, leaving the decay room (a longer schedule keeps the warmup it has); the current step's lr
        follows the new schedule at once."""
        if total_steps <= 0:
            raise ValueError(f"CosineWarmupSchedule.end_at: total_steps must be > 0, got {total_steps}")
        self.total_steps = total_steps
        self.warmup_steps = min(self.warmup_steps, total_steps // 4)
        self._apply()

    def get_last_lr(self) -> list[float]:
        """The lr of every group at the current iteration (for logging)."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def _apply(self) -> None:
        for i, group in enumerate(self.optimizer.param_groups):
            group["lr"] = self.lr_at(self.last_step, i)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the exact lr sequence."""
        return {
            "last_step": self.last_step,
            "base_lrs": list(self.base_lrs),
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "warmup_lr": self.warmup_lr,
            "min_lr": self.min_lr,
            "decay": self.decay,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` and set the optimizer's lr for the restored iteration."""
        if len(state["base_lrs"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"CosineWarmupSchedule: state has {len(state['base_lrs'])} base lrs but the "
                f"optimizer has {len(self.optimizer.param_groups)} param groups"
            )
        self.last_step = int(state["last_step"])
        self.base_lrs = [float(lr) for lr in state["base_lrs"]]
        self.total_steps = int(state["total_steps"])
        self.warmup_steps = int(state["warmup_steps"])
        self.warmup_lr = float(state["warmup_lr"])
        self.min_lr = float(state["min_lr"])
        self.decay = state.get("decay", self.decay)  # checkpoints from before linear decay existed: cosine
        self._apply()
