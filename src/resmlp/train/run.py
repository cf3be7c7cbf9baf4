"""One function wires a run: data + model + optimizer + engine + checkpoints -> a run directory.

Run directory (the contract between commands):
    config.yaml        the resolved configuration
    metrics.jsonl      one JSON line per epoch (train_loss, val_loss, val_top1, val_top5, lr, images_per_s, ...)
    checkpoints/       last.pt (every epoch, on a stop signal and every run.checkpoint_every_min), previous.pt
                       (the one before), best.pt (best val_top1), all written atomically; rank<r>/ the RNG
                       states of the other processes under torchrun
    summary.json       best_val_top1, final_val_top1, epochs, train_images_per_s, wall_time_s, stopped_by, ...
    teacher/           the run directory of the teacher trained first (distill.teacher_recipe; teacher_stage)
    tb/                TensorBoard events (when the tensorboard package is installed)
    bad_files.tsv      images that could not be decoded (path, reason), if any
    .lock              held while a run trains here: its pid and host (see train.lock)

`train` = `build` (everything wired, fresh) -> `restore` (a resumed run's states) -> `run_epochs` -> `summarize`.
SIGTERM / SIGINT / SIGUSR1 stop a run after the current optimizer step with a checkpoint that `--resume`
continues exactly (mid-epoch: same samples, augmentations, Mixup draws, dropout, EMA and schedule).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import random
import shlex
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from ..checkpoint import atomic_save, latest_checkpoint, model_record
from ..config import ConfigError, ModelConfig, RunConfig, TrainConfig, config_from_dict, config_to_dict, save_config
from ..data.batch_augment import BatchAugment
from ..data.build import DataSplits, build_data, share_decoded
from ..data.datasets import read_bad_log
from ..data.mixup import Mixup
from ..data.resumable import PositionSampler, SeededDataset
from ..data.sampler import RepeatedAugSampler
from ..device import auto_precision, place, resolve_device, retain_freed_cpu_memory
from ..files import remove_stale_temporaries, write_text_atomic
from ..models import Preprocess, count_params, create_model, get_variant, model_args
from ..models.init import init_token_mixing
from ..models.layers import to_pair
from ..models.tta import with_tta
from ..models.whiten import whiten_patch_embedding
from ..optim import CosineWarmupSchedule, build_optimizer, clips_internally, scale_lr
from ..weights import WeightsError, load_weights
from . import distributed as dist
from .budget import BudgetFit, epochs_started, final_tta_cost, final_tta_runs, plan_steps
from .engine import EpochCarry, ModelEma, StepContext, evaluate, train_one_epoch
from .lock import run_lock
from .losses import soft_target_cross_entropy
from .preempt import StepGate, StopSignals, ignore_stop_signals, signal_name
from .progressive import check_schedule, relative_epoch_cost, schedule_of, set_run_size, size_at, time_passes


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


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.model.name}-{cfg.data.source}-{time.strftime('%Y%m%d-%H%M%S')}"


def model_arguments(cfg: ModelConfig) -> dict[str, Any]:
    """Every constructor argument of variant `cfg.name` with the config's model fields applied; a field
    the variant does not take is a ConfigError naming `model.<field>` and the ones it takes."""
    try:
        get_variant(cfg.name)
    except ValueError as e:
        raise ConfigError(f"model.name: {e}") from None
    for key, value in cfg.overrides().items():
        try:
            model_args(cfg.name, **{key: value})
        except ValueError as e:
            raise ConfigError(f"model.{key}: {e}") from None
    return model_args(cfg.name, **cfg.overrides())[1]


def init_process(cfg: RunConfig) -> tuple[torch.device, int, int]:
    """This process's device, rank and world size (several under torchrun), and its intra-op threads."""
    device = resolve_device(cfg.device, local_rank=dist.env_local_rank())
    rank, _, world = dist.init(device.type)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.set_num_threads(cfg.threads or dist.default_threads())
    if device.type == "cpu" and cfg.retain_cpu_memory:
        retain_freed_cpu_memory()
    if cfg.precision == "fp16" and device.type != "cuda":
        raise ValueError("run.precision=fp16 needs CUDA (loss scaling); on CPU use run.precision=bf16")
    return device, rank, world


class CrossEntropyCriterion:
    """The plain objective: cross-entropy against the (mixed, smoothed) soft targets; no teacher."""

    identity = None

    def __call__(self, images: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return soft_target_cross_entropy(logits, targets)

    def pop_teacher_time(self) -> None:
        return None


def build_criterion(cfg: TrainConfig, device: torch.device, preprocess: Preprocess, classes: list[str]):
    """(images, logits, soft targets) -> loss; with `distill.teacher` set, the distillation loss."""
    if cfg.distill.trains_teacher:
        raise ValueError("distill.teacher_recipe: the teacher is trained by `train` before the student is built")
    if cfg.distill.active:
        from .distill import build_distillation  # noqa: PLC0415 - only runs that distil need it

        own = to_pair(preprocess.img_size)
        sizes = sorted({size for _, size in schedule_of(cfg)} - {own})  # progressive resizing's other sizes
        return build_distillation(
            cfg.distill, device=device, student_preprocess=preprocess, classes=classes, batch_sizes=sizes
        )
    return CrossEntropyCriterion()


@dataclass
class Run:
    """The wired parts of a run: what `build` makes, `restore` fills and `run_epochs` drives."""

    cfg: TrainConfig
    run_dir: Path
    rank: int
    world: int
    data: DataSplits
    model: nn.Module  # unwrapped (what checkpoints hold); ctx.model is the DDP / compiled one
    ctx: StepContext  # optimizer, schedule, criterion, EMA, loss scaler, Mixup
    train_loader: DataLoader
    sampler: PositionSampler  # the epoch order from a start position (mid-epoch resume)
    val_loader: DataLoader
    mixup_rng: torch.Generator  # the batch-level draws: batch augmentation, then Mixup/CutMix
    global_batch: int
    lr: float  # the peak lr after the linear scaling rule
    steps_per_epoch: int


@dataclass
class Progress:
    """Where a run stands (checkpointed; restored on resume)."""

    planned_epochs: float  # a fitted plan may end in part of an epoch (train/budget.py)
    epoch: int = 0  # epochs done (a partial last epoch counts once it is done)
    best_val_top1: float = -1.0
    wall_time_s: float = 0.0
    carry: EpochCarry = EpochCarry()  # how far into epoch `epoch` (a mid-epoch checkpoint)
    stopped_by: Optional[int] = None  # the signal that stopped this session


class CheckpointWriteError(ValueError):
    """A checkpoint could not be written (a full disk, ...); the previous one is kept."""


def loader_workers(requested: int) -> int:
    """A recipe's worker count is a ceiling: no more than the cores this process has (under torchrun, the
    machine's cores divided among its processes), so a recipe tuned on a big host does not oversubscribe
    a small one."""
    return max(0, min(requested, dist.default_threads()))


def _loaders(data: DataSplits, cfg: TrainConfig, rank: int, world: int, device: torch.device):
    d = cfg.data
    epoch_order: Sampler
    if d.repeated_aug:
        epoch_order = RepeatedAugSampler(
            len(data.train), num_repeats=d.num_repeats, num_replicas=world, rank=rank, seed=cfg.run.seed
        )
    else:
        epoch_order = DistributedSampler(data.train, num_replicas=world, rank=rank, shuffle=True, seed=cfg.run.seed)
    if len(epoch_order) < d.batch_size:
        raise ValueError(
            f"data.batch_size={d.batch_size} is larger than the {len(epoch_order)} training samples "
            f"per process; lower data.batch_size"
        )
    sampler = PositionSampler(epoch_order, seed=cfg.run.seed, rank=rank)
    pin, workers = device.type == "cuda", loader_workers(d.workers)
    items = SeededDataset(
        data.train,
        seeded=not d.batch_augment,  # batch augmentation draws later, per batch
        flip_seed=cfg.run.seed if d.hflip_alternate else None,
    )
    train = DataLoader(
        items,
        batch_size=d.batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        pin_memory=pin,
        worker_init_fn=ignore_stop_signals if workers else None,
    )
    shard = Subset(data.val, list(range(rank, len(data.val), world)))  # each process evaluates its own shard
    val = DataLoader(
        shard,
        batch_size=d.eval_batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin,
        worker_init_fn=ignore_stop_signals if workers else None,
    )
    return train, sampler, val


def build_model(
    cfg: TrainConfig,
    data: DataSplits,
    device: torch.device,
    finetune: str | Path | None,
    augment: Optional[BatchAugment] = None,
) -> nn.Module:
    """The configured variant with the data's classes and preprocessing, optionally from `finetune` weights
    (`augment`: the run's batch augmentation, which the stem whitening's sample goes through)."""
    img_size = model_arguments(cfg.model)["img_size"]
    model = create_model(cfg.model.name, **cfg.model.overrides(), num_classes=len(data.classes))
    init_token_mixing(model, cfg.model.token_mixing_init, generator=torch.Generator().manual_seed(cfg.run.seed))
    if cfg.model.stem_init != "default":
        sample = whitening_sample(data.train, cfg.model.stem_init_samples, seed=cfg.run.seed, augment=augment)
        whiten_patch_embedding(model, sample, kind=cfg.model.stem_init)
    model.spec = model.spec.replace(
        classes=data.classes,
        preprocess=Preprocess(
            img_size=tuple(img_size) if isinstance(img_size, list) else img_size,
            crop_pct=cfg.data.crop_pct,
            interpolation=cfg.data.interpolation,
            mean=data.mean,
            std=data.std,
        ),
    )
    if finetune:
        # weights made for another input size: their token mixing is carried to this run's patch grid
        load_weights(model, finetune, allow_head_mismatch=True, resample=True)
    return place(model, device)


def whitening_sample(
    dataset: Dataset, count: int, *, seed: int, augment: Optional[BatchAugment] = None
) -> torch.Tensor:
    """`count` training images (a seeded choice, through the training transform and `augment` when the run
    augments batches) to fit the stem whitening on."""
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    images = torch.stack([dataset[int(i)][0] for i in idx])
    if augment is None:
        return images
    return dataclasses.replace(augment, generator=torch.Generator().manual_seed(seed))(images)


def build(
    cfg: TrainConfig,
    run_dir: Path,
    device: torch.device,
    *,
    rank: int = 0,
    world: int = 1,
    finetune: str | Path | None = None,
) -> Run:
    """Data, model, loaders, optimizer, schedule, EMA, loss scaler, Mixup and criterion, freshly initialised."""
    d, o = cfg.data, cfg.optim
    data = build_data(d, img_size=model_arguments(cfg.model)["img_size"], bad_log=run_dir / "bad_files.tsv")
    mixup_rng = torch.Generator().manual_seed(cfg.run.seed * 1000 + rank)
    augment = (
        BatchAugment(mean=data.mean, std=data.std, padding=d.padding, hflip=d.hflip, generator=mixup_rng)
        if d.batch_augment
        else None
    )
    model = build_model(cfg, data, device, finetune, augment)  # the whitening sample: randomly flipped
    if augment is not None:
        augment = dataclasses.replace(augment, hflip=d.random_hflip)  # the same draws, fewer flips taken
    train_loader, sampler, val_loader = _loaders(data, cfg, rank, world, device)
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
    )
    steps_per_epoch = max(1, len(train_loader) // o.accum_steps)
    schedule = CosineWarmupSchedule(
        optimizer,
        total_steps=o.epochs * steps_per_epoch,
        warmup_steps=round(o.warmup_epochs * steps_per_epoch),
        base_lr=lr,
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
    wrapped = dist.wrap(model, device)
    ctx = StepContext(
        model=torch.compile(wrapped) if cfg.run.compile else wrapped,
        optimizer=optimizer,
        schedule=schedule,
        criterion=build_criterion(cfg, device, model.spec.preprocess, data.classes),
        device=device,
        precision=auto_precision(cfg.run.precision, device),
        accum_steps=o.accum_steps,
        clip_grad_norm=None if clips_internally(optimizer) else o.max_grad_norm,
        scaler=torch.amp.GradScaler("cuda") if cfg.run.precision == "fp16" else None,
        ema=ModelEma(model, cfg.run.ema_decay) if cfg.run.ema else None,
        mixup=mixup,
        augment=augment,
        teacher_sees_full=cfg.distill.active and cfg.distill.teacher_view == "full",
    )
    return Run(
        cfg,
        run_dir,
        rank,
        world,
        data,
        model,
        ctx,
        train_loader,
        sampler,
        val_loader,
        mixup_rng,
        global_batch,
        lr,
        steps_per_epoch,
    )


def restore(run: Run, ckpt: dict) -> Progress:
    """Load a checkpoint's model, optimizer, schedule, EMA, loss scaler and RNG states (this process's)."""
    ctx = run.ctx
    # A progressive run's checkpoint holds the model at the size of its last epoch: move there first.
    if schedule_of(run.cfg):
        set_run_size(run, ckpt["model_args"]["img_size"], base_size=_base_size(run), moments=False)
    load_weights(run.model, ckpt["model"])
    ctx.optimizer.load_state_dict(ckpt["optimizer"])
    ctx.schedule.load_state_dict(ckpt["schedule"])
    if ctx.ema is not None and ckpt.get("ema") is not None:
        ctx.ema.module.load_state_dict(ckpt["ema"])
    if ctx.scaler is not None and ckpt.get("scaler"):
        ctx.scaler.load_state_dict(ckpt["scaler"])
    position = (ckpt["epoch"], ckpt.get("step", 0))
    mine = ckpt if run.rank == 0 else _read_rank_state(run.run_dir, run.rank, position)
    run.mixup_rng.set_state(mine["mixup_rng"])
    set_rng_state(mine["rng"])
    # A time-budgeted run keeps the plan it fitted itself to; otherwise the (possibly raised) optim.epochs.
    fitted = run.cfg.run.fit_to_time_limit and "planned_epochs" in ckpt
    carry = EpochCarry(step=position[1], loss_sum=mine.get("epoch_loss_sum", 0.0), seen=mine.get("epoch_seen", 0))
    return Progress(
        planned_epochs=ckpt["planned_epochs"] if fitted else run.cfg.optim.epochs,
        epoch=ckpt["epoch"],
        best_val_top1=ckpt["best_val_top1"],
        wall_time_s=ckpt["wall_time_s"],
        carry=carry,
    )


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
        "scaler": ctx.scaler.state_dict() if ctx.scaler is not None else None,
        "teacher": ctx.criterion.identity,
        "planned_epochs": progress.planned_epochs,
    }


def _rank_file(run_dir: Path, rank: int, position: tuple[int, int]) -> Path:
    return run_dir / "checkpoints" / f"rank{rank}" / f"e{position[0]}-s{position[1]}.pt"


def _read_rank_state(run_dir: Path, rank: int, position: tuple[int, int]) -> dict:
    path = _rank_file(run_dir, rank, position)
    if not path.is_file():
        raise WeightsError(
            f"{path}: process {rank}'s state for epoch {position[0]} step {position[1]} is missing; "
            "resume with the same number of processes as the run that wrote the checkpoint"
        )
    return torch.load(path, weights_only=True)


def _prune_rank_files(run_dir: Path, rank: int, keep: int = 2) -> None:
    """Keep the newest `keep` states of this process (those of last.pt and previous.pt)."""

    def position(p: Path) -> tuple[int, int]:
        e, s = p.stem.split("-")
        return int(e[1:]), int(s[1:])

    files = sorted((run_dir / "checkpoints" / f"rank{rank}").glob("e*-s*.pt"), key=position)
    for p in files[:-keep]:
        p.unlink(missing_ok=True)


class _Logger:
    """metrics.jsonl + optional TensorBoard, rank 0 only."""

    def __init__(self, run_dir: Path, use_tb: bool) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if use_tb:
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415
                self.tb = SummaryWriter(str(run_dir / "tb"))
            except ImportError:
                pass

    def log(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
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
        classes = len(run.data.classes)
        start = time.perf_counter()
        ev = evaluate(
            with_tta(ctx.model, cfg.run.tta), run.val_loader, ctx.device, num_classes=classes, precision=ctx.precision
        )
        row.update(val_loss=ev.loss, val_top1=ev.top1, val_top5=ev.top5, eval_time_s=time.perf_counter() - start)
        if ctx.ema is not None:
            ev = evaluate(
                with_tta(ctx.ema.module, cfg.run.tta),
                run.val_loader,
                ctx.device,
                num_classes=classes,
                precision=ctx.precision,
            )
            row.update(val_top1_ema=ev.top1, val_top5_ema=ev.top5)
        if last and final_tta_runs(cfg.run):
            _final_tta(run, row)
    teacher_time = ctx.criterion.pop_teacher_time()
    if teacher_time is not None:
        row["teacher_time_s"] = teacher_time
    return row


def _final_tta(run: Run, row: dict[str, Any]) -> None:
    """The last epoch's extra evaluation with the `run.final_tta` views, into `row`."""
    ctx = run.ctx
    ev = evaluate(
        with_tta(ctx.model, run.cfg.run.final_tta),
        run.val_loader,
        ctx.device,
        num_classes=len(run.data.classes),
        precision=ctx.precision,
    )
    row.update(val_top1_tta=ev.top1, val_top5_tta=ev.top5, tta=run.cfg.run.final_tta)


def run_epochs(run: Run, progress: Progress, gate: StepGate, *, may_fit_budget: bool) -> list[dict[str, Any]]:
    """Train epoch by epoch (logging and checkpointing each) until the plan or the time limit ends or `gate`
    says stop; returns this session's metrics rows. `may_fit_budget`: a fresh run may fit its plan to
    the time budget after every epoch."""
    cfg = run.cfg.run
    logger = _Logger(run.run_dir, cfg.tensorboard) if dist.is_main() else None
    t0 = time.perf_counter() - progress.wall_time_s
    rows: list[dict[str, Any]] = []
    fit: Optional[BudgetFit] = None  # a fresh time-budgeted run's plan, checked after every epoch

    def after_step(carry: EpochCarry) -> bool:
        return _after_step(run, progress, gate, carry, t0)

    while progress.epoch < progress.planned_epochs:
        schedule = schedule_of(run.cfg, progress.planned_epochs)  # a fitted plan moves the switches with it
        if schedule:  # progressive resizing: switch (resample A and its moments) when the schedule says
            set_run_size(run, size_at(schedule, progress.epoch, _base_size(run)), base_size=_base_size(run))
        row = train_epoch(run, progress.epoch, progress.planned_epochs, carry=progress.carry, after_step=after_step)
        if row is None:  # stopped by a signal; the checkpoint is written
            break
        progress.carry = EpochCarry()
        if schedule:
            row["img_size"] = run.model.stem.img_size
        row["wall_time_s"] = time.perf_counter() - t0
        if may_fit_budget and not rows and cfg.fit_to_time_limit and cfg.time_limit_min:
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
        if _out_of_time(run, progress, cfg.time_limit_min):
            break
        progress.stopped_by = gate.poll().stop  # a signal during evaluation: the epoch's checkpoint is written
        if progress.stopped_by is not None:
            break
    progress.wall_time_s = time.perf_counter() - t0
    return rows


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


def _base_size(run: Run) -> Any:
    """The configured image size (the transforms' crop size; progressive sizes are reached from it)."""
    return model_arguments(run.cfg.model)["img_size"]


def _end_epoch(run: Run, progress: Progress, row: dict, improved: bool, logger: Optional[_Logger]) -> None:
    """Log the row and write the checkpoints."""
    if dist.is_main():
        logger.log(row)
    write_checkpoint(run, progress, improved=improved)
    if dist.is_main() and run.cfg.run.progress:
        print(_epoch_line(row, progress.planned_epochs), flush=True)


def write_checkpoint(run: Run, progress: Progress, *, improved: bool) -> None:
    """Every process writes its own state (rank<r>/), rank 0 the checkpoint; then all agree that every write
    succeeded. A failed write (a full disk) keeps the previous checkpoint and is a CheckpointWriteError on
    every rank, so none waits forever for the others."""
    mine = rank_state(run, progress)
    position = (progress.epoch, progress.carry.step)
    failure = None
    try:
        if run.rank:
            atomic_save(mine, _rank_file(run.run_dir, run.rank, position))
        else:
            _save(run.run_dir, run.model, run.cfg, checkpoint_state(run, progress, mine), improved)
    except OSError as e:
        failure = e
    failed = dist.all_reduce_sum(torch.tensor([float(failure is not None)], device=run.ctx.device))
    if failed.item():
        last = run.run_dir / "checkpoints" / "last.pt"
        kept = f"the previous checkpoint {last} is kept" if last.is_file() else "no checkpoint was written before"
        why = f"{failure.strerror or failure}" if failure is not None else "another process failed to write its state"
        raise CheckpointWriteError(
            f"cannot write the checkpoint at {_position(run, progress)} ({why}); {kept}; "
            f"free space, then resume with "
            f"`{resume_command(run.run_dir)}`"
        )
    if run.rank:
        _prune_rank_files(run.run_dir, run.rank)


def _out_of_time(run: Run, progress: Progress, limit_min: float | None) -> bool:
    if limit_min is None or progress.wall_time_s < limit_min * 60 or progress.epoch >= progress.planned_epochs:
        return False
    if dist.is_main():
        print(
            f"time limit of {limit_min} min reached after epoch {progress.epoch}; resume with "
            f"`resmlp train --resume {run.run_dir} --set run.time_limit_min=null`"
        )
    return True


def _start_fit(run: Run, first_epoch_s: float) -> BudgetFit:
    """The time budget's pricing after the first epoch (`first_epoch_s`): a progressive run times one
    forward/backward pass at every size of its schedule and prices each later epoch by its size."""
    cfg = run.cfg
    budget_s = cfg.run.time_limit_min * 60
    if not schedule_of(cfg):
        return BudgetFit(budget_s, cfg.optim.epochs)
    base = _base_size(run)
    sizes = {size for _, size in schedule_of(cfg)} | {size_at(schedule_of(cfg), 0, base)}
    seconds = time_passes(
        run.model,
        sorted(sizes),
        batch_size=cfg.data.batch_size,
        device=run.ctx.device,
        precision=run.ctx.precision,
        mode=cfg.run.progressive_mode,
    )
    if dist.is_main():
        timed = ", ".join(f"{s:.2f} s at {h}x{w}" for (h, w), s in seconds.items())
        print(f"one forward/backward pass of a batch of {cfg.data.batch_size}: {timed}", flush=True)
    passes = run.steps_per_epoch * cfg.optim.accum_steps
    return BudgetFit(
        budget_s,
        cfg.optim.epochs,
        lambda planned, epoch: relative_epoch_cost(
            schedule_of(cfg, planned), epoch, base, seconds, passes, first_epoch_s
        ),
        seconds,
    )


def _replan(run: Run, fit: BudgetFit, progress: Progress, row: dict[str, Any]) -> int:
    """After an epoch (`row`) of a time-budgeted run: the plan that fits, the final TTA evaluation's time kept
    free (priced from this epoch's evaluation, scaled to the last epoch's size); the lr schedule follows a
    shorter or longer plan."""
    cfg = run.cfg
    planned = progress.planned_epochs
    scale = 1.0
    if fit.pass_seconds:
        base = _base_size(run)
        scale = fit.size_scale(
            size_at(schedule_of(cfg, planned), epochs_started(planned) - 1, base),
            size_at(schedule_of(cfg, planned), progress.epoch, base),
        )
    reserve_s = final_tta_cost(cfg.run, row, scale)
    eval_s = row.get("eval_time_s", 0.0)
    fitted = fit.replan(
        planned,
        progress.epoch,
        row["wall_time_s"],
        reserve_s,
        eval_s * scale,
        epoch_s=row["epoch_time_s"] + eval_s,
        may_lengthen=lambda longer: not _steps_back_in_size(run, longer, progress.epoch + 1),
    )
    if fitted != planned:
        run.ctx.schedule.end_at(plan_steps(fitted, run.steps_per_epoch))
    if dist.is_main() and (fitted != planned or progress.epoch == 0):
        print(
            _fit_line(cfg.run.time_limit_min, progress.epoch, row["wall_time_s"], fit, reserve_s, planned, fitted),
            flush=True,
        )
    return fitted


def _steps_back_in_size(run: Run, planned: float, epoch: int) -> bool:
    """Whether a plan of `planned` epochs would train epoch `epoch` at a smaller size than the model's now: a
    longer plan moves the progressive switches later, past one the run may already have made."""
    schedule = schedule_of(run.cfg, planned)
    if not schedule:
        return False
    h, w = size_at(schedule, epoch, _base_size(run))
    now_h, now_w = to_pair(run.model.stem.img_size)
    return h * w < now_h * now_w


def _fit_line(
    limit_min: float, epoch: int, elapsed_s: float, fit: BudgetFit, reserve_s: float, planned: float, fitted: float
) -> str:
    """What the time budget's fit did after epoch `epoch` (0-based)."""
    if epoch == 0:
        took = f"the first epoch took {elapsed_s:.0f} s"
        took += " (later epochs priced by their sizes' timed passes)" if fit.epoch_cost is not None else ""
    else:
        pace = "slower" if fitted < planned else "faster"
        took = f"{epoch + 1} epochs took {elapsed_s:.0f} s, {pace} than planned"
    final = f", {reserve_s:.0f} s kept for the final TTA evaluation" if reserve_s else ""
    plan = (
        f"the schedule now ends after {fitted:g} epochs instead of {planned:g}"
        if fitted != planned
        else f"the plan of {planned:g} epochs fits"
    )
    return f"time budget {limit_min:.4g} min: {took}{final}, so {plan}"


def _save(run_dir: Path, model: nn.Module, cfg: TrainConfig, state: dict, improved: bool) -> None:
    record = {**model_record(model), "config": config_to_dict(cfg), **state}
    folder = run_dir / "checkpoints"
    atomic_save(record, folder / "last.pt", keep_previous=folder / "previous.pt")
    if improved:
        best = {k: v for k, v in record.items() if k not in ("optimizer", "rng", "schedule", "scaler", "mixup_rng")}
        atomic_save(best, folder / "best.pt")


def _position(run: Run, progress: Progress) -> str:
    step = progress.carry.step
    if step:
        return f"epoch {progress.epoch + 1}, step {step} of {run.steps_per_epoch}"
    return f"the end of epoch {progress.epoch}"


def resume_command(run_dir: Path) -> str:
    return f"resmlp train --resume {shlex.quote(str(run_dir))}"


def stop_message(run: Run, progress: Progress) -> str:
    """What a stopped run tells its user: where it stopped, where the checkpoint is, how to go on."""
    return (
        f"stopped by {signal_name(progress.stopped_by)} at {_position(run, progress)}; checkpoint "
        f"{run.run_dir / 'checkpoints' / 'last.pt'}; resume with `{resume_command(run.run_dir)}`"
    )


def _start_line(run: Run) -> str:
    cfg, data = run.cfg, run.data
    return (
        f"run {run.run_dir}: {cfg.model.name} ({count_params(run.model):,} params), {len(data.train)} train / "
        f"{len(data.val)} val images, {len(data.classes)} classes, {run.world} process(es) on {run.ctx.device}, "
        f"global batch {run.global_batch}, lr {run.lr:.3g}, {cfg.optim.epochs} epochs x {run.steps_per_epoch} steps"
    )


def _epoch_line(row: dict, epochs: float) -> str:
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
        "run_dir": str(run.run_dir),
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
        "bad_files": len(read_bad_log(run.run_dir / "bad_files.tsv")),
        "teacher": run.ctx.criterion.identity,
        "stopped_by": signal_name(progress.stopped_by) if progress.stopped_by else None,
    }


def train(
    cfg: TrainConfig,
    *,
    out: str | Path | None = None,
    resume: str | Path | None = None,
    finetune: str | Path | None = None,
) -> dict[str, Any]:
    """Run (or resume) training as configured; returns the summary written to `summary.json`."""
    arguments = model_arguments(cfg.model)
    check_schedule(cfg, arguments.get("patch_size"), arguments["img_size"])  # before any file is written
    device, rank, world = init_process(cfg.run)
    if resume and not (Path(resume) / "checkpoints").is_dir():
        raise WeightsError(f"{resume}: not a run directory (no checkpoints/ folder) to resume")
    run_dir = Path(resume) if resume else Path(out) if out else default_run_dir(cfg)
    shared_data = share_decoded() if cfg.distill.trains_teacher else contextlib.nullcontext()  # decoded once
    with run_lock(run_dir) if dist.is_main() else contextlib.nullcontext() as stale, shared_data:
        if stale:
            print(f"{run_dir}: took over the lock of a run that is gone ({stale})")
        teacher_s = None
        if cfg.distill.trains_teacher:
            stage = teacher_stage(cfg, run_dir)
            if stage.stopped is not None:
                return stage.stopped
            cfg, teacher_s = stage.student, stage.seconds
        ckpt = latest_checkpoint(run_dir) if resume else None
        if dist.is_main():
            (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            save_config(cfg, run_dir / "config.yaml")
        remove_stale_temporaries(run_dir / "checkpoints" / (f"rank{rank}" if rank else ""))  # a killed writer's
        seed_everything(cfg.run.seed + rank)
        run = build(cfg, run_dir, device, rank=rank, world=world, finetune=None if ckpt else finetune)
        progress = restore(run, ckpt) if ckpt else Progress(planned_epochs=cfg.optim.epochs)
        with StopSignals() as signals:
            if dist.is_main():  # from this line on, a stop signal ends the run with a checkpoint
                print(_start_line(run), flush=True)
            gate = StepGate(signals, every_min=cfg.run.checkpoint_every_min, device=device)
            rows = run_epochs(run, progress, gate, may_fit_budget=ckpt is None)
        summary = summarize(run, progress, rows)
        own_teacher = own_teacher_seconds(cfg, run_dir) if teacher_s is None else teacher_s
        if own_teacher is not None:
            summary["teacher_wall_time_s"] = own_teacher  # minutes-to-accuracy of the whole run add these
        if dist.is_main():
            write_text_atomic(run_dir / "summary.json", json.dumps(summary, indent=2))
            if progress.stopped_by is not None:
                summary["message"] = stop_message(run, progress)
    return summary


TEACHER_DIR = "teacher"  # <run>/teacher: the teacher a run trains first (distill.teacher_recipe)


@dataclass
class TeacherStage:
    """What training a run's own teacher gave: the student's config (that teacher, and the time left of the
    run's limit) and the stage's seconds, or the summary of a stage stopped by a signal."""

    student: TrainConfig
    seconds: float
    stopped: Optional[dict[str, Any]] = None


def teacher_stage(cfg: TrainConfig, run_dir: Path) -> TeacherStage:
    """Train the teacher of `distill.teacher_recipe` in <run>/teacher (resume it there if it was stopped, reuse
    it if it finished), then hand the student that teacher and what is left of `run.time_limit_min`."""
    from .distill import teacher_run_config  # noqa: PLC0415 - only runs that distil need it

    teacher_dir = run_dir / TEACHER_DIR
    start = time.perf_counter()
    seconds = _finished_run_seconds(teacher_dir)
    if seconds is None:
        resume = (teacher_dir / "checkpoints" / "last.pt").is_file()
        if dist.is_main():
            print(
                f"the teacher first ({cfg.distill.teacher_recipe}): {'resuming ' if resume else ''}{teacher_dir}",
                flush=True,
            )
        teacher_cfg = config_of_run(teacher_dir) if resume else teacher_run_config(cfg)
        _check_teacher_budget(teacher_cfg.run.time_limit_min, cfg.run.time_limit_min, cfg.distill.teacher_recipe)
        summary = train(teacher_cfg, out=teacher_dir, resume=teacher_dir if resume else None)
        if summary.get("stopped_by"):
            summary["message"] = (
                f"stopped by {summary['stopped_by']} while training the teacher in {teacher_dir}; "
                "run the same command again (same --out): the teacher resumes from its checkpoint"
            )
            return TeacherStage(cfg, 0.0, stopped=summary)
        seconds = summary["wall_time_s"] if resume else time.perf_counter() - start
    limit = cfg.run.time_limit_min
    left = None if limit is None else limit - seconds / 60
    if left is not None and left <= 0:
        raise ValueError(
            f"the teacher took {seconds / 60:.1f} min of run.time_limit_min={limit:g}: no time is left "
            f"for the student; set distill.teacher_time_min lower or raise run.time_limit_min"
        )
    if dist.is_main():
        remaining = "" if left is None else f"; the student gets the {left:.1f} min left of {limit:g}"
        print(f"teacher {teacher_dir}: {seconds / 60:.1f} min{remaining}", flush=True)
    student = dataclasses.replace(
        cfg,
        distill=dataclasses.replace(cfg.distill, teacher=str(teacher_dir)),
        run=dataclasses.replace(cfg.run, time_limit_min=left),
    )
    return TeacherStage(student, seconds)


def _check_teacher_budget(teacher_min: Optional[float], limit_min: Optional[float], recipe: Optional[str]) -> None:
    """Refuse, before it trains, a teacher whose own time limit would leave the student no time."""
    if limit_min is not None and teacher_min is not None and teacher_min >= limit_min:
        raise ConfigError(
            f"distill.teacher_recipe={recipe} trains for {teacher_min:g} min (its run.time_limit_min), "
            f"which leaves no time of run.time_limit_min={limit_min:g} for the student; set "
            "distill.teacher_time_min lower, raise run.time_limit_min, or distill.teacher=none"
        )


def own_teacher_seconds(cfg: TrainConfig, run_dir: Path) -> Optional[float]:
    """The training seconds of the teacher a run trained itself, from its summary (None when it distils from
    another one). A resumed student reports these; the session that trained the teacher also counted its data
    loading (TeacherStage.seconds), so the two may differ by that start-up."""
    teacher_dir = run_dir / TEACHER_DIR
    if cfg.distill.teacher is None or Path(cfg.distill.teacher) != teacher_dir:
        return None
    return _finished_run_seconds(teacher_dir)


def _finished_run_seconds(run_dir: Path) -> Optional[float]:
    """The wall time of a run that ended on its own (its summary.json, no stop signal), else None."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(summary, dict) or summary.get("stopped_by") or "wall_time_s" not in summary:
        return None
    return float(summary["wall_time_s"])


def config_of_run(run_dir: str | Path) -> TrainConfig:
    """The configuration a run was started with (from its newest loadable checkpoint)."""
    return config_from_dict(latest_checkpoint(run_dir)["config"])
