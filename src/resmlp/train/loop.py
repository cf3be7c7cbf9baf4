"""The epoch loop: train, evaluate, log and checkpoint epoch by epoch until the plan or the time limit ends or a
stop signal arrives (`run_epochs`); a time-budgeted run re-fits its plan after every epoch (train/budget.py)."""

from __future__ import annotations

import time
import warnings
from typing import Any, Callable, Optional

import torch

from ..models.layers import to_pair
from ..models.tta import with_tta
from ..rundir import RunDir
from . import distributed as dist
from .budget import BudgetFit, final_tta_runs, fit_line, passes_line, plan_steps, replan, start_fit
from .checkpointing import write_checkpoint
from .engine import EpochCarry, evaluate, train_one_epoch
from .parts import Progress, Run
from .preempt import StepGate
from .progressive import schedule_of, size_at
from .summary import epoch_line


class MetricsLog:
    """metrics.jsonl + optional TensorBoard (rank 0 only)."""

    def __init__(self, run_dir: RunDir, use_tb: bool) -> None:
        self.run_dir = run_dir
        self.tb = None
        if use_tb:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415

                self.tb = SummaryWriter(str(run_dir.tensorboard))
            except ImportError:
                pass

    def log(self, row: dict) -> None:
        self.run_dir.append_metrics(row)
        if self.tb is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.tb.add_scalar(k, v, row["epoch"])
            self.tb.flush()


def train_epoch(
    run: Run, epoch: int, planned_epochs: float, *, carry: EpochCarry, after_step: Callable[[EpochCarry], bool]
) -> Optional[dict[str, Any]]:
    """Train epoch `epoch` from `carry` on (the plan's last epoch only up to the plan's steps), evaluate when
    due; the epoch's metrics row (without wall_time_s), or None when `after_step` stopped it early."""
    cfg, ctx = run.cfg, run.ctx
    run.sampler.set_epoch(epoch, start=carry.step * cfg.optim.accum_steps * cfg.data.batch_size)
    run.train_loader.generator = torch.Generator().manual_seed(cfg.run.seed * 100_003 + epoch)  # worker seeds
    steps = min(run.steps_per_epoch, plan_steps(planned_epochs, run.steps_per_epoch) - epoch * run.steps_per_epoch)
    stats = train_one_epoch(
        ctx,
        run.train_loader,
        epoch=epoch,
        progress=cfg.run.progress,
        carry=carry,
        after_step=after_step,
        max_steps=steps if steps < run.steps_per_epoch else None,
    )
    if stats.stopped:
        return None
    row = {
        "epoch": epoch + 1,
        "train_loss": stats.train_loss,
        "lr": stats.lr,
        "images_per_s": stats.images_per_s,
        "epoch_time_s": stats.epoch_time_s,
    }
    if steps < run.steps_per_epoch:
        row["epoch_fraction"] = stats.steps / run.steps_per_epoch  # a plan that ends in part of an epoch
    last = epoch + 1 >= planned_epochs
    if (epoch + 1) % cfg.run.eval_every == 0 or last:
        start = time.perf_counter()
        ev = _evaluate(run, run.model, cfg.run.tta)
        row.update(val_loss=ev.loss, val_top1=ev.top1, val_top5=ev.top5, eval_time_s=time.perf_counter() - start)
        if ctx.ema is not None:
            ev = _evaluate(run, ctx.ema.module, cfg.run.tta)
            row.update(val_top1_ema=ev.top1, val_top5_ema=ev.top5)
        if last and final_tta_runs(cfg.run):
            _final_tta(run, row)
    teacher_time = ctx.criterion.pop_teacher_time()
    if teacher_time is not None:
        row["teacher_time_s"] = teacher_time
    return row


def _evaluate(run: Run, model: torch.nn.Module, tta: str):
    """`model` scored on the validation split with the `tta` views. The plain model, not the compiled training step:
    evaluation through Inductor took 4.5 s per epoch in the hour's runs against 1.7 s eager (AMX Xeon, bf16)."""
    ctx = run.ctx
    return evaluate(
        with_tta(model, tta), run.val_loader, ctx.device, num_classes=len(run.data.classes), precision=ctx.precision
    )


def _final_tta(run: Run, row: dict[str, Any]) -> None:
    """The last epoch's extra evaluation with the `run.final_tta` views, into `row`."""
    ev = _evaluate(run, run.model, run.cfg.run.final_tta)
    row.update(val_top1_tta=ev.top1, val_top5_tta=ev.top5, tta=run.cfg.run.final_tta)


def run_epochs(run: Run, progress: Progress, gate: StepGate) -> list[dict[str, Any]]:
    """Train epoch by epoch (logging and checkpointing each) until the plan or the time limit ends or `gate`
    says stop; returns this session's metrics rows. A time-budgeted run fits its plan to the budget after
    every epoch, a resumed one from its earlier sessions' epochs on."""
    cfg = run.cfg.run
    logger = MetricsLog(run.run_dir, cfg.tensorboard) if dist.is_main() else None
    t0 = time.perf_counter() - progress.wall_time_s
    rows: list[dict[str, Any]] = []
    budgeted = bool(run.cfg.budget.fit_to_time_limit and run.cfg.budget.time_limit_min)
    fit: Optional[BudgetFit] = None  # the time-budgeted plan's pricing, from the run's first epoch on
    if budgeted and 0 < progress.epoch < progress.planned_epochs:
        fit = _resumed_fit(run, progress)

    def after_step(carry: EpochCarry) -> bool:
        return _after_step(run, progress, gate, carry, t0)

    while progress.epoch < progress.planned_epochs:
        schedule = schedule_of(run.cfg, progress.planned_epochs)  # a fitted plan moves the switches with it
        if schedule:  # progressive resizing: switch (resample A and its moments) when the schedule says
            run.resize(size_at(schedule, progress.epoch, run.base_size))
        resumed_at = progress.carry.step
        row = train_epoch(run, progress.epoch, progress.planned_epochs, carry=progress.carry, after_step=after_step)
        if row is None:  # stopped by a signal; the checkpoint is written
            break
        if resumed_at:
            row["epoch_time_from_step"] = resumed_at  # its epoch_time_s covers only this session's steps
        progress.carry = EpochCarry()
        if schedule:
            row["img_size"] = run.model.stem.img_size
        row["wall_time_s"] = time.perf_counter() - t0
        if budgeted and fit is None:
            fit = _start_fit(run, row["wall_time_s"])
        if fit is not None:
            progress.planned_epochs = _replan(run, fit, progress, row)
            if progress.epoch + 1 >= progress.planned_epochs and "tta" not in row and final_tta_runs(cfg):
                _final_tta(run, row)  # the plan was cut to end at this epoch after it had been trained
                row["wall_time_s"] = time.perf_counter() - t0
        improved = "val_top1" in row and row["val_top1"] > progress.best_val_top1
        progress.epoch += 1
        progress.best_val_top1 = max(progress.best_val_top1, row.get("val_top1", progress.best_val_top1))
        progress.wall_time_s = row["wall_time_s"]
        _end_epoch(run, progress, row, improved, logger)
        gate.saved()
        rows.append(row)
        if _out_of_time(run, progress, run.cfg.budget.time_limit_min):
            break
        progress.stopped_by = gate.poll().stop  # a signal during evaluation: the epoch's checkpoint is written
        if progress.stopped_by is not None:
            break
    progress.wall_time_s = time.perf_counter() - t0
    return rows


def _start_fit(run: Run, first_epoch_s: float) -> BudgetFit:
    fit = start_fit(
        run.cfg,
        run.model,
        base_size=run.base_size,
        steps_per_epoch=run.steps_per_epoch,
        device=run.ctx.device,
        precision=run.ctx.precision,
        first_epoch_s=first_epoch_s,
    )
    if fit.pass_seconds and dist.is_main():
        print(passes_line(fit, run.cfg.data.batch_size), flush=True)
    return fit


def _resumed_fit(run: Run, progress: Progress) -> BudgetFit:
    """A resumed time-budgeted run's pricing: the first epoch's time and the earlier sessions' epochs, from
    metrics.jsonl (the newest row of each epoch the checkpoint holds)."""
    by_epoch = {row.get("epoch"): row for row in run.run_dir.read_metrics()}
    done = [by_epoch.get(e, {"epoch": e}) for e in range(1, progress.epoch + 1)]  # a lost row: its cost, no pace
    first_s = done[0].get("wall_time_s", progress.wall_time_s / progress.epoch)
    fit = _start_fit(run, first_s)
    fit.take_up(done, progress.planned_epochs)
    return fit


def _replan(run: Run, fit: BudgetFit, progress: Progress, row: dict[str, Any]) -> float:
    """The plan that fits after this epoch; the lr schedule follows a shorter or longer plan."""
    planned = progress.planned_epochs
    fitted, reserve_s = replan(
        run.cfg,
        fit,
        planned=planned,
        epoch=progress.epoch,
        row=row,
        base_size=run.base_size,
        current_size=to_pair(run.model.stem.img_size) if schedule_of(run.cfg) else None,  # patch models only
    )
    if fitted != planned:
        run.ctx.schedule.end_at(plan_steps(fitted, run.steps_per_epoch))
    if dist.is_main() and (fitted != planned or progress.epoch == 0):
        limit = run.cfg.budget.time_limit_min
        print(fit_line(limit, progress.epoch, row["wall_time_s"], fit, reserve_s, planned, fitted), flush=True)
    return fitted


def _after_step(run: Run, progress: Progress, gate: StepGate, carry: EpochCarry, t0: float) -> bool:
    """After an optimizer step: write a mid-epoch checkpoint when a signal or the periodic timer asks for
    one (every rank decides alike, see StepGate); True to stop here."""
    decision = gate.poll()
    if decision.stop is None and not decision.save:
        return False
    progress.carry = carry
    progress.wall_time_s = time.perf_counter() - t0
    write_checkpoint(run, progress, improved=False)
    gate.saved()
    progress.stopped_by = decision.stop
    return decision.stop is not None


def _end_epoch(run: Run, progress: Progress, row: dict, improved: bool, logger: Optional[MetricsLog]) -> None:
    """Log the row and write the checkpoints."""
    if dist.is_main():
        logger.log(row)
    write_checkpoint(run, progress, improved=improved)
    if dist.is_main() and run.cfg.run.progress:
        print(epoch_line(row, progress.planned_epochs), flush=True)


def _out_of_time(run: Run, progress: Progress, limit_min: float | None) -> bool:
    if limit_min is None or progress.wall_time_s < limit_min * 60 or progress.epoch >= progress.planned_epochs:
        return False
    if dist.is_main():
        print(
            f"time limit of {limit_min} min reached after epoch {progress.epoch}; resume with "
            f"`resmlp train --resume {run.run_dir.root} --set budget.time_limit_min=null`"
        )
    return True
