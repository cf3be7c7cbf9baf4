"""A run's checkpoint state: what is written after every epoch (and mid-epoch on a stop signal or timer), the
per-process files of a torchrun run, and `restore`, which reads them back so a resumed run continues exactly.

A checkpoint is `checkpoint.model_record` (the weights and the model's spec) + the config + the state below;
rank 0's RNG states are in it, every other process keeps its own in checkpoints/rank<r>/e<epoch>-s<step>.pt.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..checkpoint import TEXT_FORMAT, atomic_save, latest_checkpoint, model_record
from ..config import TrainConfig, config_from_dict, config_to_dict
from ..rundir import RunDir
from ..weights import WeightsError, load_weights, torch_load_safely
from . import distributed as dist
from .engine import EpochCarry
from .parts import Progress, Run
from .progressive import schedule_of
from .summary import resume_command

# What best.pt leaves out of last.pt: the states only a resume needs.
RESUME_ONLY = ("optimizer", "rng", "schedule", "scaler", "mixup_rng", "lookahead")


class CheckpointWriteError(ValueError):
    """A checkpoint could not be written (a full disk, ...); the previous one is kept."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),) + tuple(state["python"][2:]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))


def rank_state(run: Run, progress: Progress) -> dict:
    """What each process keeps for itself: its RNG states and its share of the epoch's loss so far."""
    return {
        "rng": rng_state(),
        "mixup_rng": run.mixup_rng.get_state(),
        "epoch_loss_sum": float(progress.carry.loss_sum),
        "epoch_seen": progress.carry.seen,
    }


def checkpoint_state(run: Run, progress: Progress, mine: dict) -> dict:
    """Everything `restore` reads besides the model weights, at the position `progress` describes
    (`epoch` epochs done, plus `step` optimizer steps of the next one); `mine`: rank 0's `rank_state`."""
    ctx = run.ctx
    return {
        "epoch": progress.epoch,
        "step": progress.carry.step,
        "best_val_top1": progress.best_val_top1,
        "wall_time_s": progress.wall_time_s,
        **mine,
        "optimizer": ctx.optimizer.state_dict(),
        "schedule": ctx.schedule.state_dict(),
        "ema": ctx.ema.module.state_dict() if ctx.ema is not None else None,
        "lookahead": ctx.lookahead.module.state_dict() if ctx.lookahead is not None else None,
        "scaler": ctx.scaler.state_dict() if ctx.scaler is not None else None,
        "teacher": ctx.criterion.identity,
        "planned_epochs": progress.planned_epochs,
    }


def save(run_dir: RunDir, model: nn.Module, cfg: TrainConfig, state: dict, improved: bool) -> None:
    """Rank 0's files: last.pt (the one before kept as previous.pt), and best.pt when `improved`."""
    record = {**model_record(model), "config": config_to_dict(cfg), **state}
    atomic_save(record, run_dir.last, keep_previous=run_dir.previous)
    if improved:
        atomic_save({k: v for k, v in record.items() if k not in RESUME_ONLY}, run_dir.best)


def write_checkpoint(run: Run, progress: Progress, *, improved: bool) -> None:
    """Every process writes its own state (rank<r>/), rank 0 the checkpoint; then all agree that every write
    succeeded. A failed write (a full disk) keeps the previous checkpoint and is a CheckpointWriteError on
    every rank, so none waits forever for the others."""
    mine = rank_state(run, progress)
    failure = None
    try:
        if run.rank:
            atomic_save(mine, run.run_dir.rank_state(run.rank, progress.epoch, progress.carry.step))
        else:
            save(run.run_dir, run.model, run.cfg, checkpoint_state(run, progress, mine), improved)
    except OSError as e:
        failure = e
    failed = dist.all_reduce_sum(torch.tensor([float(failure is not None)], device=run.ctx.device))
    if failed.item():
        last = run.run_dir.last
        kept = f"the previous checkpoint {last} is kept" if last.is_file() else "no checkpoint was written before"
        why = f"{failure.strerror or failure}" if failure is not None else "another process failed to write its state"
        raise CheckpointWriteError(
            f"cannot write the checkpoint at {progress.position(run.steps_per_epoch)} ({why}); {kept}; "
            f"free space, then resume with `{resume_command(run.run_dir.root)}`"
        )
    if run.rank:
        prune_rank_states(run.run_dir, run.rank)


def read_rank_state(run_dir: RunDir, rank: int, position: tuple[int, int]) -> dict:
    path = run_dir.rank_state(rank, *position)
    if not path.is_file():
        raise WeightsError(
            f"{path}: process {rank}'s state for epoch {position[0]} step {position[1]} is missing; "
            "resume with the same number of processes as the run that wrote the checkpoint"
        )
    return torch.load(path, weights_only=True)


def prune_rank_states(run_dir: RunDir, rank: int, keep: int = 2) -> None:
    """Keep the newest `keep` states of this process (those of last.pt and previous.pt)."""

    def position(p: Path) -> tuple[int, int]:
        e, s = p.stem.split("-")
        return int(e[1:]), int(s[1:])

    files = sorted(run_dir.rank_dir(rank).glob("e*-s*.pt"), key=position)
    for p in files[:-keep]:
        p.unlink(missing_ok=True)


def restore(run: Run, ckpt: dict) -> Progress:
    """Load a checkpoint's model, optimizer, schedule, EMA, loss scaler and RNG states (this process's)."""
    ctx = run.ctx
    # A progressive run's checkpoint holds the model at the size of its last epoch: move there first.
    if schedule_of(run.cfg):
        run.resize(ckpt["model_args"]["img_size"], moments=False)
    load_weights(run.model, ckpt["model"])
    ctx.optimizer.load_state_dict(ckpt["optimizer"])
    ctx.schedule.load_state_dict(ckpt["schedule"])
    if ctx.ema is not None and ckpt.get("ema") is not None:
        ctx.ema.module.load_state_dict(ckpt["ema"])
    if ctx.lookahead is not None and ckpt.get("lookahead") is not None:
        ctx.lookahead.module.load_state_dict(ckpt["lookahead"])
    if ctx.scaler is not None and ckpt.get("scaler"):
        ctx.scaler.load_state_dict(ckpt["scaler"])
    position = (ckpt["epoch"], ckpt.get("step", 0))
    mine = ckpt if run.rank == 0 else read_rank_state(run.run_dir, run.rank, position)
    run.mixup_rng.set_state(mine["mixup_rng"])
    set_rng_state(mine["rng"])
    # A time-budgeted run starts from the plan it fitted itself to (and re-fits it after its next epoch,
    # train/loop.py); otherwise the (possibly raised) optim.epochs.
    fitted = run.cfg.budget.fit_to_time_limit and "planned_epochs" in ckpt
    carry = EpochCarry(step=position[1], loss_sum=mine.get("epoch_loss_sum", 0.0), seen=mine.get("epoch_seen", 0))
    return Progress(
        planned_epochs=ckpt["planned_epochs"] if fitted else run.cfg.optim.epochs,
        epoch=ckpt["epoch"],
        best_val_top1=ckpt["best_val_top1"],
        wall_time_s=ckpt["wall_time_s"],
        carry=carry,
    )


def config_of_run(run_dir: str | Path) -> TrainConfig:
    """The configuration a run was started with (from its newest loadable checkpoint; a text run's from
    checkpoints/last.pt, train/text.py)."""
    last = RunDir(run_dir).last
    try:
        ckpt = torch_load_safely(last) if last.is_file() else None
    except WeightsError:  # a damaged last.pt: latest_checkpoint falls back to previous.pt
        ckpt = None
    if isinstance(ckpt, dict) and ckpt.get("format") == TEXT_FORMAT:
        return config_from_dict(ckpt["config"])
    return config_from_dict(latest_checkpoint(run_dir)["config"])
