"""Figures more than one command draws (matplotlib `Figure` objects with Agg, never pyplot, so drawing
never changes the caller's matplotlib backend)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure


def save_figure(fig: Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def plot_confusion(confusion: np.ndarray, classes: Sequence[str] | None, path: Path, title: str | None = None) -> None:
    """Row-normalised confusion matrix (rows = true class)."""
    rows = confusion.sum(axis=1, keepdims=True)
    norm = np.divide(confusion, rows, out=np.zeros_like(confusion, dtype=float), where=rows > 0)
    n = len(confusion)
    size = min(9.0, 3.0 + 0.3 * n)
    fig = Figure(figsize=(size, size * 0.85))
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if classes is not None and n <= 30:
        ax.set_xticks(range(n), classes, rotation=90, fontsize=7)
        ax.set_yticks(range(n), classes, fontsize=7)
    if n <= 12:
        for (r, c), v in np.ndenumerate(norm):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white" if v > 0.5 else "black")
    ax.set(xlabel="predicted", ylabel="true")
    if title:
        ax.set_title(title, fontsize=9)
    save_figure(fig, path)
