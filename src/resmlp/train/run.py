"""One function wires a run: data + model + optimizer + engine + checkpoints -> a run directory.

Run directory (the contract between commands):
    config.yaml        the resolved configuration
    metrics.jsonl      one JSON line per epoch (train_loss, val_loss, val_top1, val_top5, lr, images_per_s, ...)
    checkpoints/       last.pt (every epoch) and best.pt (best val_top1), written atomically
    summary.json       best_val_top1, final_val_top1, epochs, train_images_per_s, wall_time_s, ...
    tb/                TensorBoard events (when the tensorboard package is installed)
    bad_files.tsv      images that could not be decoded (path, reason), if any
"""
from __future__ import annotations

import json
import random
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ..checkpoint import atomic_save, model_record, read_checkpoint
from ..data.build import DataSplits, build_data
from ..data.datasets import read_bad_log
from ..data.mixup import Mixup
from ..data.sampler import RepeatedAugSampler
from ..models import Preprocess, count_params, create_model, model_args
from ..optim import CosineWarmupSchedule, build_optimizer, scale_lr
from ..weights import load_weights
from . import distributed as dist
from .config import TrainConfig, config_from_dict, config_to_dict, save_config
from .engine import ModelEma, StepContext, evaluate, soft_target_cross_entropy, train_one_epoch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{dist.env_local_rank()}" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device={name}: CUDA is not available on this machine; use run.device=cpu")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"python": random.getstate(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}


def set_rng_state(state: dict) -> None:
    random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),) + tuple(state["python"][2:]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), *n[2:]))


def default_run_dir(cfg: TrainConfig) -> Path:
    return Path("runs") / f"{cfg.model.name}-{cfg.data.source}-{time.strftime('%Y%m%d-%H%M%S')}"


def _loaders(data: DataSplits, cfg: TrainConfig, rank: int, world: int, device: torch.device):
    d = cfg.data
    if d.repeated_aug:
        sampler = RepeatedAugSampler(len(data.train), num_repeats=d.num_repeats, num_replicas=world, rank=rank,
                                     seed=cfg.run.seed)
    else:
        sampler = DistributedSampler(data.train, num_replicas=world, rank=rank, shuffle=True, seed=cfg.run.seed)
    if len(sampler) < d.batch_size:
        raise ValueError(f"data.batch_size={d.batch_size} is larger than the {len(sampler)} training samples "
                         f"per process; lower data.batch_size")
    pin = device.type == "cuda"
    train = DataLoader(data.train, batch_size=d.batch_size, sampler=sampler, num_workers=d.workers,
                       drop_last=True, pin_memory=pin)
    shard = Subset(data.val, list(range(rank, len(data.val), world)))  # each process evaluates its own shard
    val = DataLoader(shard, batch_size=d.eval_batch_size, shuffle=False, num_workers=d.workers, pin_memory=pin)
    return train, sampler, val


def build_criterion(cfg: TrainConfig, device: torch.device, preprocess: Preprocess, classes: list[str]):
    """(images, logits, soft targets) -> loss; with `distill.teacher` set, the distillation loss."""
    if cfg.distill.teacher and cfg.distill.teacher != "none":
        from ..distill import build_distillation  # noqa: PLC0415 - only runs that distil need it

        return build_distillation(cfg.distill, device=device, student_preprocess=preprocess, classes=classes)
    return lambda images, logits, targets: soft_target_cross_entropy(logits, targets)


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


def train(cfg: TrainConfig, *, out: str | Path | None = None, resume: str | Path | None = None,
          finetune: str | Path | None = None) -> dict[str, Any]:
    """Run (or resume) training as configured; returns the summary written to `summary.json`."""
    device = resolve_device(cfg.run.device)
    rank, _, world = dist.init(device.type)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.set_num_threads(cfg.run.threads or dist.default_threads())
    if cfg.run.precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"run.precision={cfg.run.precision!r}: expected fp32, bf16 or fp16")
    if cfg.run.precision == "fp16" and device.type != "cuda":
        raise ValueError("run.precision=fp16 needs CUDA (loss scaling); on CPU use run.precision=bf16")
    ckpt = read_checkpoint(Path(resume) / "checkpoints" / "last.pt") if resume else None
    run_dir = Path(resume) if resume else Path(out) if out else default_run_dir(cfg)
    if dist.is_main():
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    seed_everything(cfg.run.seed + rank)

    img_size = cfg.data.img_size or model_args(cfg.model.name, **cfg.model.overrides)[1]["img_size"]
    data = build_data(cfg.data, img_size=img_size, bad_log=run_dir / "bad_files.tsv")
    overrides = {**cfg.model.overrides, "img_size": img_size, "num_classes": len(data.classes),
                 "drop_path_rate": cfg.model.drop_path_rate}
    model = create_model(cfg.model.name, **overrides)
    model.preprocess = Preprocess(img_size=img_size, crop_pct=cfg.data.crop_pct,
                                  interpolation=cfg.data.interpolation, mean=data.mean, std=data.std)
    if finetune and not ckpt:
        load_weights(model, finetune, allow_head_mismatch=True)
    model.to(device)

    train_loader, sampler, val_loader = _loaders(data, cfg, rank, world, device)
    accum = cfg.optim.accum_steps
    global_batch = cfg.data.batch_size * world * accum
    lr = scale_lr(cfg.optim.lr, global_batch, cfg.optim.lr_batch)
    optimizer = build_optimizer(model, name=cfg.optim.name, lr=lr, weight_decay=cfg.optim.weight_decay,
                                momentum=cfg.optim.momentum, max_grad_norm=cfg.optim.max_grad_norm)
    steps_per_epoch = max(1, len(train_loader) // accum)
    schedule = CosineWarmupSchedule(optimizer, total_steps=cfg.optim.epochs * steps_per_epoch,
                                    warmup_steps=round(cfg.optim.warmup_epochs * steps_per_epoch),
                                    base_lr=lr, warmup_lr=cfg.optim.warmup_lr, min_lr=cfg.optim.min_lr)
    ema = ModelEma(model, cfg.run.ema_decay) if cfg.run.ema else None
    scaler = torch.amp.GradScaler("cuda") if cfg.run.precision == "fp16" else None
    mix_gen = torch.Generator().manual_seed(cfg.run.seed * 1000 + rank)
    d = cfg.data
    mixup = Mixup(num_classes=len(data.classes), mixup_alpha=d.mixup_alpha, cutmix_alpha=d.cutmix_alpha,
                  prob=d.mixup_prob, switch_prob=d.switch_prob, label_smoothing=d.label_smoothing, generator=mix_gen)

    start_epoch, best, elapsed_before, planned_epochs = 0, -1.0, 0.0, cfg.optim.epochs
    if ckpt:
        load_weights(model, ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        schedule.load_state_dict(ckpt["schedule"])
        if ema is not None and ckpt.get("ema") is not None:
            ema.module.load_state_dict(ckpt["ema"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        mix_gen.set_state(ckpt["mixup_rng"])
        start_epoch, best, elapsed_before = ckpt["epoch"], ckpt["best_val_top1"], ckpt["wall_time_s"]
        if cfg.run.fit_to_time_limit:
            planned_epochs = ckpt.get("planned_epochs", cfg.optim.epochs)
        rng_file = run_dir / "checkpoints" / f"rng_rank{rank}.pt"
        set_rng_state(torch.load(rng_file, weights_only=True) if rank else ckpt["rng"])

    wrapped = dist.wrap(model, device)
    if cfg.run.compile:
        wrapped = torch.compile(wrapped)
    ctx = StepContext(model=wrapped, optimizer=optimizer, schedule=schedule,
                      criterion=build_criterion(cfg, device, model.preprocess, data.classes), device=device, precision=cfg.run.precision,
                      accum_steps=accum, clip_grad_norm=cfg.optim.max_grad_norm if cfg.optim.name != "lamb" else None,
                      scaler=scaler, ema=ema, mixup=mixup)
    logger = _Logger(run_dir, cfg.run.tensorboard) if dist.is_main() else None
    if dist.is_main():
        print(f"run {run_dir}: {cfg.model.name} ({count_params(model):,} params), {len(data.train)} train / "
              f"{len(data.val)} val images, {len(data.classes)} classes, {world} process(es) on {device}, "
              f"global batch {global_batch}, lr {lr:.3g}, {cfg.optim.epochs} epochs x {steps_per_epoch} steps")

    t0 = time.perf_counter() - elapsed_before
    images_per_s: list[float] = []
    last: dict = {}
    epoch = start_epoch
    while epoch < planned_epochs:
        sampler.set_epoch(epoch)
        train_loader.generator = torch.Generator().manual_seed(cfg.run.seed * 100_003 + epoch)  # worker seeds
        stats = train_one_epoch(ctx, train_loader, epoch=epoch, progress=cfg.run.progress)
        images_per_s.append(stats["images_per_s"])
        row = {"epoch": epoch + 1, "train_loss": stats["train_loss"], "lr": stats["lr"],
               "images_per_s": stats["images_per_s"], "epoch_time_s": stats["epoch_time_s"]}
        if (epoch + 1) % cfg.run.eval_every == 0 or epoch + 1 == planned_epochs:
            ev = evaluate(wrapped, val_loader, device, num_classes=len(data.classes), precision=cfg.run.precision)
            row.update(val_loss=ev["loss"], val_top1=ev["top1"], val_top5=ev["top5"])
            if ema is not None:
                ev_ema = evaluate(ema.module, val_loader, device, num_classes=len(data.classes),
                                  precision=cfg.run.precision)
                row.update(val_top1_ema=ev_ema["top1"], val_top5_ema=ev_ema["top5"])
            last = row
        if hasattr(ctx.criterion, "teacher_time_s"):
            row["teacher_time_s"] = ctx.criterion.pop_teacher_time()
        row["wall_time_s"] = time.perf_counter() - t0
        if cfg.run.fit_to_time_limit and cfg.run.time_limit_min and epoch == start_epoch and not ckpt:
            planned_epochs = _fit_epochs_to_budget(planned_epochs, row["wall_time_s"], cfg.run.time_limit_min,
                                                   schedule, steps_per_epoch)
        improved = "val_top1" in row and row["val_top1"] > best
        best = max(best, row.get("val_top1", best))
        state = {"epoch": epoch + 1, "best_val_top1": best, "wall_time_s": row["wall_time_s"], "rng": rng_state(),
                 "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
                 "ema": ema.module.state_dict() if ema is not None else None,
                 "scaler": scaler.state_dict() if scaler is not None else None, "mixup_rng": mix_gen.get_state(),
                 "teacher": getattr(ctx.criterion, "identity", None), "planned_epochs": planned_epochs}
        if rank:
            atomic_save(state["rng"], run_dir / "checkpoints" / f"rng_rank{rank}.pt")
        if dist.is_main():
            logger.log(row)
            _save(run_dir, model, data, cfg, state, improved)
            if cfg.run.progress:
                print(_epoch_line(row, planned_epochs), flush=True)
        dist.barrier()
        limit = cfg.run.time_limit_min
        epoch += 1
        if limit is not None and row["wall_time_s"] >= limit * 60 and epoch < planned_epochs:
            if dist.is_main():
                print(f"time limit of {limit} min reached after epoch {epoch}; resume with "
                      f"`resmlp train --resume {run_dir} --set run.time_limit_min=null`")
            break

    summary = {
        "run_dir": str(run_dir), "model": cfg.model.name, "params": count_params(model),
        "epochs": epoch, "planned_epochs": planned_epochs, "best_val_top1": best,
        "final_val_top1": last.get("val_top1"), "final_val_top5": last.get("val_top5"),
        "train_images_per_s": float(np.median(images_per_s)) if images_per_s else None,
        "wall_time_s": time.perf_counter() - t0, "processes": world, "device": str(device),
        "classes": len(data.classes), "bad_files": len(read_bad_log(run_dir / "bad_files.tsv")),
        "teacher": getattr(ctx.criterion, "identity", None),
    }
    if dist.is_main():
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _fit_epochs_to_budget(planned: int, first_epoch_s: float, limit_min: float, schedule: CosineWarmupSchedule,
                          steps_per_epoch: int) -> int:
    """Time-budgeted runs: after the first epoch, shorten the plan (and the cosine schedule with it) to the
    number of epochs that fit in `limit_min`, so the lr anneals fully before the budget ends. Such runs
    depend on the machine's speed, so they are not bit-reproducible."""
    fit = max(1, int(limit_min * 60 // max(first_epoch_s, 1e-9)))
    if fit >= planned:
        return planned
    schedule.total_steps = fit * steps_per_epoch
    schedule.warmup_steps = min(schedule.warmup_steps, schedule.total_steps // 4)
    if dist.is_main():
        print(f"time budget {limit_min} min: the first epoch took {first_epoch_s:.0f} s, so the schedule now "
              f"ends after {fit} epochs instead of {planned}")
    return fit


def _save(run_dir: Path, model, data: DataSplits, cfg: TrainConfig, state: dict, improved: bool) -> None:
    record = {**model_record(model, classes=data.classes), "config": config_to_dict(cfg), **state}
    atomic_save(record, run_dir / "checkpoints" / "last.pt")
    if improved:
        best = {k: v for k, v in record.items() if k not in ("optimizer", "rng", "schedule", "scaler", "mixup_rng")}
        atomic_save(best, run_dir / "checkpoints" / "best.pt")


def _epoch_line(row: dict, epochs: int) -> str:
    parts = [f"epoch {row['epoch']}/{epochs}", f"loss {row['train_loss']:.4f}"]
    if "val_top1" in row:
        parts.append(f"val top-1 {row['val_top1']:.2f}% top-5 {row['val_top5']:.2f}%")
    if "val_top1_ema" in row:
        parts.append(f"ema top-1 {row['val_top1_ema']:.2f}%")
    parts += [f"lr {row['lr']:.2e}", f"{row['images_per_s']:.0f} img/s", f"{row['wall_time_s'] / 60:.1f} min"]
    return " | ".join(parts)


def config_of_run(run_dir: str | Path) -> TrainConfig:
    """The configuration a run was started with (from its last checkpoint)."""
    return config_from_dict(read_checkpoint(Path(run_dir) / "checkpoints" / "last.pt")["config"])
