"""What a run tells its user: the start line, one line per epoch, the stop message and summary.json."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..data.datasets import read_bad_log
from ..models import count_params
from .parts import Progress, Run
from .preempt import signal_name


def resume_command(run_dir: Path) -> str:
    return f"resmlp train --resume {shlex.quote(str(run_dir))}"


def stop_message(run: Run, progress: Progress) -> str:
    """Where a stopped run stopped, where the checkpoint is, how to go on."""
    return (
        f"stopped by {signal_name(progress.stopped_by)} at {progress.position(run.steps_per_epoch)}; checkpoint "
        f"{run.run_dir.last}; resume with `{resume_command(run.run_dir.root)}`"
    )


def input_size_text(model: nn.Module) -> str:
    """The model's input size as its parameter count stands for it (` at 32 px`), or nothing for a model whose
    size is not in its spec. A progressive run's model has its base size here until its first epoch moves it."""
    spec = getattr(model, "spec", None)
    size = spec.args.get("img_size") if spec is not None else None
    if size is None:
        return ""
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return f" at {h} px" if h == w else f" at {h} x {w} px"


def start_line(run: Run) -> str:
    cfg, data = run.cfg, run.data
    return (
        f"run {run.run_dir.root}: {cfg.model.name} ({count_params(run.model):,} params"
        f"{input_size_text(run.model)}), {len(data.train)} train / "
        f"{len(data.val)} val images, {len(data.classes)} classes, {run.world} process(es) on {run.ctx.device}, "
        f"global batch {run.global_batch}, lr {run.lr:.3g}, {cfg.optim.epochs} epochs x {run.steps_per_epoch} steps"
    )


def epoch_line(row: dict, epochs: float) -> str:
    parts = [f"epoch {row['epoch']}/{epochs:g}", f"loss {row['train_loss']:.4f}"]
    if "val_top1" in row:
        parts.append(f"val top-1 {row['val_top1']:.2f}% top-5 {row['val_top5']:.2f}%")
    if "val_top1_ema" in row:
        parts.append(f"ema top-1 {row['val_top1_ema']:.2f}%")
    parts += [f"lr {row['lr']:.2e}", f"{row['images_per_s']:.0f} img/s", f"{row['wall_time_s'] / 60:.1f} min"]
    return " | ".join(parts)


def summarize(run: Run, progress: Progress, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """summary.json: the best and final accuracy, the epochs done, median throughput and wall time."""
    last = next((r for r in reversed(rows) if "val_top1" in r), {})
    speeds = [r["images_per_s"] for r in rows]
    return {
        "run_dir": str(run.run_dir.root),
        "model": run.cfg.model.name,
        "params": count_params(run.model),
        "epochs": min(progress.epoch, progress.planned_epochs),
        "planned_epochs": progress.planned_epochs,
        "best_val_top1": progress.best_val_top1,
        "final_val_top1": last.get("val_top1"),
        "final_val_top5": last.get("val_top5"),
        "final_val_top1_tta": last.get("val_top1_tta"),
        "final_tta": last.get("tta"),
        "train_images_per_s": float(np.median(speeds)) if speeds else None,
        "wall_time_s": progress.wall_time_s,
        "processes": run.world,
        "device": str(run.ctx.device),
        "classes": len(run.data.classes),
        "bad_files": len(read_bad_log(run.run_dir.bad_files)),
        "teacher": run.ctx.criterion.identity,
        "stopped_by": signal_name(progress.stopped_by) if progress.stopped_by else None,
    }
