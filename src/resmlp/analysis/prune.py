"""Magnitude pruning (the paper's section 4.2 remark that sparse weights invite compression).

Each matrix is pruned on its own ("per layer"): the round(s * numel) entries of smallest |w| are set to
zero, so the requested sparsity is hit exactly (up to rounding to whole entries). Biases are kept.
"""

from __future__ import annotations

import copy
from typing import Iterable, Sequence

import torch
from torch import nn
from tqdm import tqdm

from ..train.engine import evaluate
from .stats import block_weights

PRUNE_TARGETS = ("A", "B", "C")


def parse_sparsities(text: str) -> list[float]:
    """'0.5,0.8,0.9' -> [0.5, 0.8, 0.9]; each must lie in [0, 1]."""
    out = []
    for part in text.split(","):
        try:
            s = float(part)
        except ValueError:
            raise ValueError(f"{part.strip()!r} is not a number; expected sparsities like 0.5,0.8,0.9") from None
        if not 0.0 <= s <= 1.0:
            raise ValueError(f"sparsity {s} is outside [0, 1]")
        out.append(s)
    return out


def parse_targets(text: str) -> tuple[str, ...]:
    """'A,B' -> ('A', 'B'); the matrices of each block to prune."""
    targets = tuple(t.strip().upper() for t in text.split(",") if t.strip())
    bad = [t for t in targets if t not in PRUNE_TARGETS]
    if bad or not targets:
        raise ValueError(f"unknown target {', '.join(bad) or '(none given)'}; choose from {', '.join(PRUNE_TARGETS)}")
    return targets


@torch.no_grad()
def magnitude_prune_(weight: torch.Tensor, sparsity: float) -> int:
    """Zero the round(sparsity * numel) smallest-|w| entries of `weight` in place; returns how many."""
    if not 0.0 <= sparsity <= 1.0:
        raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    k = round(sparsity * weight.numel())
    if k:
        order = torch.argsort(weight.abs().flatten(), stable=True)  # ties: lower index pruned first
        weight.view(-1)[order[:k]] = 0
    return k


def prune_model(model: nn.Module, sparsity: float, targets: Sequence[str] = ("A",)) -> tuple[nn.Module, dict]:
    """A pruned copy of `model` and, per target, the achieved sparsity (fraction of exact zeros) and the
    share of the L1 mass that was kept."""
    pruned = copy.deepcopy(model)
    zeros = {t: 0 for t in targets}
    total = {t: 0 for t in targets}
    mass = {t: [0.0, 0.0] for t in targets}  # [kept, before]
    for ws in block_weights(pruned):
        for t in targets:
            w = ws[t].data
            before = float(w.abs().sum())
            magnitude_prune_(w, sparsity)
            zeros[t] += int((w == 0).sum())
            total[t] += w.numel()
            mass[t][0] += float(w.abs().sum())
            mass[t][1] += before
    report = {
        t: {"sparsity": zeros[t] / total[t], "l1_kept": mass[t][0] / mass[t][1] if mass[t][1] else 1.0} for t in targets
    }
    return pruned, report


def pruning_sweep(
    model: nn.Module,
    sparsities: Sequence[float],
    targets: Sequence[str] = ("A",),
    *,
    loader: Iterable | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> list[dict]:
    """One record per sparsity (0.0, the unpruned model, first): achieved sparsity and L1 kept per target,
    plus top1/top5/loss when a `loader` is given."""
    device = torch.device(device)
    results = []
    for s in tqdm(sorted({0.0, *sparsities}), desc="prune", disable=loader is None or not progress):
        pruned, report = prune_model(model, s, targets)
        record = {"sparsity": s, "targets": report}
        if loader is not None:
            stats = evaluate(pruned.to(device), loader, device, num_classes=pruned.num_classes, progress=progress)
            record.update(top1=stats.top1, top5=stats.top5, loss=stats.loss)
        results.append(record)
    return results
