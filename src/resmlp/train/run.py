"""One function wires a run: data + model + optimizer + engine + checkpoints -> a run directory (its files:
`resmlp.rundir`).

`train` = the teacher stage (a run with `distill.teacher_recipe` trains its teacher first, train/teacher.py)
-> `train_stage` of the student: `build` (everything wired, fresh) -> `checkpointing.restore` (a resumed run's
states) -> `loop.run_epochs` -> `summary.summarize`.
SIGTERM / SIGINT / SIGUSR1 stop a run after the current optimizer step with a checkpoint that `--resume`
continues exactly (mid-epoch: same samples, augmentations, Mixup draws, dropout, EMA and schedule).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import latest_checkpoint
from ..config import TrainConfig, save_config
from ..data.batch_augment import BatchAugment
from ..data.build import build_data, share_decoded
from ..data.mixup import Mixup
from ..device import auto_precision, resolve_compile
from ..files import remove_stale_temporaries
from ..optim import CosineWarmupSchedule, build_optimizer, clips_internally, scale_lr
from ..rundir import RunDir
from ..weights import WeightsError
from . import distributed as dist
from .checkpointing import restore, seed_everything
from .engine import Lookahead, ModelEma, StepContext
from .lock import run_lock
from .loop import run_epochs
from .parts import Progress, Run, wrap_model
from .preempt import StepGate, StopSignals
from .progressive import check_schedule
from .summary import start_line, stop_message, summarize
from .teacher import handoff_line, own_teacher_seconds, stopped_message, student_config, teacher_error, teacher_plan
from .wiring import build_criterion, build_model, init_process, make_loaders, model_arguments


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.model.name}-{cfg.data.source}-{time.strftime('%Y%m%d-%H%M%S')}"


def checked_model_arguments(cfg: TrainConfig) -> dict[str, Any]:
    """The model's constructor arguments, with the progressive schedule checked against them: before any
    file of a run is written."""
    arguments = model_arguments(cfg.model)
    check_schedule(cfg, arguments.get("patch_size"), arguments["img_size"])
    return arguments


def build(
    cfg: TrainConfig,
    run_dir: Path | RunDir,
    device: torch.device,
    *,
    rank: int = 0,
    world: int = 1,
    finetune: bool = True,
) -> Run:
    """Data, model, loaders, optimizer, schedule, EMA, loss scaler, Mixup and criterion, freshly initialised
    (the model from `model.finetune`'s weights when set, unless `finetune` is False: a checkpoint follows)."""
    run_dir = RunDir(run_dir) if not isinstance(run_dir, RunDir) else run_dir
    d, o = cfg.data, cfg.optim
    base_size = model_arguments(cfg.model)["img_size"]
    data = build_data(d, img_size=base_size, bad_log=run_dir.bad_files)
    mixup_rng = torch.Generator().manual_seed(cfg.run.seed * 1000 + rank)
    augment = None
    if d.batch_augment:
        augment = BatchAugment(mean=data.mean, std=data.std, padding=d.padding, hflip=d.hflip, generator=mixup_rng)
    weights = cfg.model.finetune if finetune else None
    model = build_model(cfg, data, device, weights, augment, img_size=base_size)  # whitening: randomly flipped
    if augment is not None:
        augment = dataclasses.replace(augment, hflip=d.random_hflip)  # the same draws, fewer flips taken
    train_loader, sampler, val_loader = make_loaders(data, cfg, rank, world, device)
    global_batch = d.batch_size * world * o.accum_steps
    lr = scale_lr(o.lr, global_batch, o.lr_batch)
    optimizer = build_optimizer(
        model,
        name=o.name,
        lr=lr,
        weight_decay=o.weight_decay,
        momentum=o.momentum,
        max_grad_norm=o.max_grad_norm,
        muon_token_mixing=o.muon_token_mixing,
        norm_lr_scale=o.norm_lr_scale,
        muon_lr=o.muon_lr,
    )
    steps_per_epoch = max(1, len(train_loader) // o.accum_steps)
    schedule = CosineWarmupSchedule(
        optimizer,
        total_steps=o.epochs * steps_per_epoch,
        warmup_steps=round(o.warmup_epochs * steps_per_epoch),
        base_lr=None,  # each group's own peak (optim.norm_lr_scale, optim.muon_lr)
        warmup_lr=o.warmup_lr,
        min_lr=o.min_lr,
        decay=o.sched,
    )
    mixup = Mixup(
        num_classes=len(data.classes),
        mixup_alpha=d.mixup_alpha,
        cutmix_alpha=d.cutmix_alpha,
        prob=d.mixup_prob,
        switch_prob=d.switch_prob,
        label_smoothing=d.label_smoothing,
        generator=mixup_rng,
    )
    compiled, why_not = resolve_compile(cfg.run.compile, device)
    if why_not and rank == 0:
        print(f"run.compile=auto: the step runs eager ({why_not})", flush=True)
    ctx = StepContext(
        model=wrap_model(model, device, compile=compiled),
        optimizer=optimizer,
        schedule=schedule,
        criterion=build_criterion(cfg, device, model.spec.preprocess, data.classes),
        device=device,
        precision=auto_precision(cfg.run.precision, device),
        accum_steps=o.accum_steps,
        clip_grad_norm=None if clips_internally(optimizer) else o.max_grad_norm,
        scaler=torch.amp.GradScaler("cuda") if cfg.run.precision == "fp16" else None,
        ema=ModelEma(model, cfg.run.ema_decay) if cfg.run.ema else None,
        lookahead=Lookahead(model, every=o.lookahead_every) if o.lookahead else None,
        mixup=mixup,
        augment=augment,
        teacher_sees_full=cfg.distill.active and cfg.distill.teacher_view == "full",
    )
    run = Run(
        cfg, run_dir, rank, world, base_size, data, model, ctx, train_loader, sampler, val_loader, mixup_rng,
        global_batch, lr, steps_per_epoch, compiled,
    )  # fmt: skip
    if compiled:  # a compiler fault shows as non-finite gradients where eager has none: fall back, go on
        ctx.on_nonfinite_grads = run.fall_back_from_compile
    return run


def train(
    cfg: TrainConfig,
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    finetune: str | Path | None = None,
) -> dict[str, Any]:
    """Run (or resume) training as configured; returns the summary written to `summary.json`. `finetune` sets
    `model.finetune` (the weights the model starts from)."""
    if finetune is not None:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, finetune=str(finetune)))
    if not resume and out is not None:
        refuse_an_earlier_run(RunDir(out))
    if cfg.text.task:  # a translator or language model (train/text.py)
        from .text import train_text  # noqa: PLC0415 - image runs do not need the text stack

        device, rank, world = init_process(cfg.run)
        run_dir = RunDir(resume if resume else out if out else default_run_dir(cfg))
        return train_text(cfg, run_dir, device, rank, world, resume=bool(resume))
    checked_model_arguments(cfg)
    device, rank, world = init_process(cfg.run)
    if resume and not RunDir(resume).is_run():
        raise WeightsError(f"{resume}: not a run directory (no checkpoints/ folder) to resume")
    run_dir = RunDir(resume if resume else out if out else default_run_dir(cfg))
    shared_data = share_decoded() if cfg.distill.trains_teacher else contextlib.nullcontext()  # decoded once
    with _lock(run_dir) as stale, shared_data:
        if stale:
            print(f"{run_dir.root}: took over the lock of a run that is gone ({stale})")
        teacher_s = None
        if cfg.distill.trains_teacher:
            teacher = _teacher_stage(cfg, run_dir, device, rank, world)
            if isinstance(teacher, dict):  # stopped by a signal
                return teacher
            cfg, teacher_s = teacher
        own_teacher = own_teacher_seconds(cfg, run_dir) if teacher_s is None else teacher_s
        # minutes-to-accuracy of the whole run add the teacher's
        extra = {} if own_teacher is None else {"teacher_wall_time_s": own_teacher}
        return train_stage(cfg, run_dir, device, rank, world, resume=bool(resume), extra=extra)


class RunDirectoryTaken(ValueError):
    """A new run was pointed at a directory that holds another run."""


def refuse_an_earlier_run(run_dir: RunDir) -> None:
    """A new run does not write over another one: its checkpoints and metrics would replace, or mix with, the
    earlier run's."""
    held = run_dir.earlier_run()
    if not held:
        return
    then = (
        f"continue it with `resmlp train --resume {run_dir.root}`, or choose another --out"
        if run_dir.resumable()
        else "choose another --out, or delete it"
    )
    raise RunDirectoryTaken(f"{run_dir.root}: holds an earlier run ({held}); {then}")


def _lock(run_dir: RunDir):
    return run_lock(run_dir.root) if dist.is_main() else contextlib.nullcontext()


def _teacher_stage(
    cfg: TrainConfig, run_dir: RunDir, device: torch.device, rank: int, world: int
) -> dict[str, Any] | tuple[TrainConfig, float]:
    """Train (or resume, or reuse) the run's own teacher; the student's config and the teacher's seconds, or
    the summary of a teacher stopped by a signal."""
    start = time.perf_counter()
    plan = teacher_plan(cfg, run_dir)
    seconds = plan.finished_s
    if plan.cfg is not None:
        if dist.is_main():
            resuming = "resuming " if plan.resume else ""
            print(f"the teacher first ({cfg.distill.teacher_recipe}): {resuming}{plan.run_dir.root}", flush=True)
        try:
            checked_model_arguments(plan.cfg)
            init_process(plan.cfg.run)
            with _lock(plan.run_dir):
                summary = train_stage(plan.cfg, plan.run_dir, device, rank, world, resume=plan.resume)
        except ValueError as e:  # bad input (data, config, weights): say it is the teacher's, and how to change it
            raise teacher_error(cfg, plan.run_dir, e) from None
        if summary.get("stopped_by"):
            return {**summary, "message": stopped_message(plan.run_dir, summary["stopped_by"])}
        seconds = summary["wall_time_s"] if plan.resume else time.perf_counter() - start
    student = student_config(cfg, plan.run_dir, seconds)
    if dist.is_main():
        print(handoff_line(cfg, plan.run_dir, seconds), flush=True)
    return student, seconds


def train_stage(
    cfg: TrainConfig,
    run_dir: RunDir,
    device: torch.device,
    rank: int,
    world: int,
    *,
    resume: bool,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one model in `run_dir` (from its checkpoint when `resume`, else from `model.finetune` when set);
    its summary (with `extra`), also in summary.json."""
    ckpt = latest_checkpoint(run_dir.root) if resume else None
    if dist.is_main():
        run_dir.checkpoints.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir.config)
    remove_stale_temporaries(run_dir.rank_dir(rank) if rank else run_dir.checkpoints)  # a killed writer's
    seed_everything(cfg.run.seed + rank)
    run = build(cfg, run_dir, device, rank=rank, world=world, finetune=not ckpt)
    progress = restore(run, ckpt) if ckpt else Progress(planned_epochs=cfg.optim.epochs)
    with StopSignals() as signals:
        if dist.is_main():  # from this line on, a stop signal ends the run with a checkpoint
            print(start_line(run), flush=True)
        gate = StepGate(signals, every_min=cfg.run.checkpoint_every_min, device=device)
        rows = run_epochs(run, progress, gate)
    if ckpt and dist.is_main():  # a resumed run's summary covers its earlier sessions' epochs too
        rows = run_dir.read_metrics()
    summary = {**summarize(run, progress, rows), **(extra or {})}
    if dist.is_main():
        run_dir.write_summary(summary)
        if progress.stopped_by is not None:
            summary["message"] = stop_message(run, progress)
    return summary
