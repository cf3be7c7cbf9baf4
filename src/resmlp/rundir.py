"""The run directory, the contract between commands: every path and file name of one lives here.

    config.yaml        the resolved configuration
    metrics.jsonl      one JSON line per epoch (train_loss, val_loss, val_top1, val_top5, lr, images_per_s, ...)
    checkpoints/       last.pt (every epoch, on a stop signal and every run.checkpoint_every_min), previous.pt
                       (the one before), best.pt (best val_top1), all written atomically; rank<r>/ the RNG
                       states of the other processes under torchrun
    summary.json       best_val_top1, final_val_top1, epochs, train_images_per_s, wall_time_s, stopped_by, ...
    teacher/           the run directory of the teacher trained first (distill.teacher_recipe)
    tb/                TensorBoard events (when the tensorboard package is installed)
    bad_files.tsv      images that could not be decoded (path, reason), if any
    eval.json          the last `resmlp eval` of the run's best checkpoint (read by push_to_hub)
    .lock              held while a run trains here: its pid and host (see train.lock)

This module imports only the standard library and `files` (the atomic writer), so every layer may use it.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .files import write_text_atomic

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINTS = "checkpoints"
LAST = "last.pt"
PREVIOUS = "previous.pt"
BEST = "best.pt"
RESUME_NAMES = (LAST, PREVIOUS)  # what a run keeps to resume from, newest first
TEACHER = "teacher"
TENSORBOARD = "tb"
BAD_FILES = "bad_files.tsv"
EVAL = "eval.json"
LOCK = ".lock"


def run_of_checkpoint(path: str | Path) -> Optional[Path]:
    """The run directory a checkpoint file lives in (`<run>/checkpoints/*.pt`), else None."""
    path = Path(path)
    return path.parent.parent if path.parent == RunDir(path.parent.parent).checkpoints else None


def _path(*parts: str) -> property:
    """A read-only attribute: the path `parts` inside the run directory."""
    return property(lambda self: self.root.joinpath(*parts))


@dataclass(frozen=True)
class RunDir:
    """The paths of the run directory at `root` (nothing is created until a writer writes)."""

    root: Path

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    config = _path(CONFIG)
    metrics = _path(METRICS)
    summary = _path(SUMMARY)
    checkpoints = _path(CHECKPOINTS)
    last = _path(CHECKPOINTS, LAST)
    previous = _path(CHECKPOINTS, PREVIOUS)
    best = _path(CHECKPOINTS, BEST)
    tensorboard = _path(TENSORBOARD)
    bad_files = _path(BAD_FILES)
    eval = _path(EVAL)
    lock = _path(LOCK)

    @property
    def teacher(self) -> "RunDir":
        return RunDir(self.root / TEACHER)

    def rank_dir(self, rank: int) -> Path:
        """Where process `rank` (> 0) keeps its own states under torchrun (rank 0's are in the checkpoint)."""
        return self.checkpoints / f"rank{rank}"

    def rank_state(self, rank: int, epoch: int, step: int) -> Path:
        """Process `rank`'s state at `epoch` epochs done plus `step` optimizer steps."""
        return self.rank_dir(rank) / f"e{epoch}-s{step}.pt"

    def is_run(self) -> bool:
        """Whether this looks like a run directory (it has a checkpoints/ folder)."""
        return self.checkpoints.is_dir()

    def resumable(self) -> bool:
        """Whether a checkpoint to resume from is here (last.pt or previous.pt)."""
        return any((self.checkpoints / name).is_file() for name in RESUME_NAMES)

    def earlier_run(self) -> str:
        """What an earlier run left here, in words ('' when nothing): its checkpoints or its epochs on record."""
        held = [f"checkpoints/{p.name}" for p in (self.last, self.previous, self.best) if p.is_file()]
        if self.metrics.is_file() and self.metrics.stat().st_size:
            held.append(METRICS)
        return ", ".join(held)

    def read_metrics(self) -> list[dict[str, Any]]:
        """The per-epoch rows of metrics.jsonl (none when it does not exist yet). Lines that are not JSON objects
        with an epoch are skipped with a warning (e.g. a last line cut short by a crash); blank lines silently."""
        if not self.metrics.is_file():
            return []
        rows, bad = [], 0
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            if isinstance(row, dict) and "epoch" in row:
                rows.append(row)
            else:
                bad += 1
        if bad:
            warnings.warn(f"{self.metrics}: skipped {bad} line(s) that are not JSON rows of an epoch", stacklevel=2)
        return rows

    def append_metrics(self, row: dict[str, Any]) -> None:
        """One more row of metrics.jsonl (an append: a crash loses at most the line being written)."""
        with open(self.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def read_summary(self) -> Optional[dict[str, Any]]:
        """summary.json as written by a finished (or stopped) run, or None when absent or unreadable."""
        try:
            summary = json.loads(self.summary.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return summary if isinstance(summary, dict) else None

    def write_summary(self, summary: dict[str, Any]) -> None:
        write_text_atomic(self.summary, json.dumps(summary, indent=2))

    def finished_seconds(self) -> Optional[float]:
        """The wall time of a run that ended on its own (its summary, no stop signal), else None."""
        summary = self.read_summary()
        if summary is None or summary.get("stopped_by") or "wall_time_s" not in summary:
            return None
        return float(summary["wall_time_s"])
