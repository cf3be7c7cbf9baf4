"""The training loop as two functions, `train_one_epoch` and `evaluate`: they take objects, return stats."""

from __future__ import annotations

import contextlib
import copy
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Protocol

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.batch_augment import BatchAugment
from . import distributed as dist


class NonFiniteLossError(RuntimeError):
    """The loss or the gradients became NaN/inf: the run stops and the last good checkpoint is kept."""


class ModelEma:
    """Exponential moving average of the weights (Polyak averaging), updated after each optimizer step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        self.decay = decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_v, v in zip(self.module.state_dict().values(), model.state_dict().values()):
            if ema_v.dtype.is_floating_point:
                ema_v.lerp_(v.detach(), 1.0 - self.decay)
            else:
                ema_v.copy_(v)


class Lookahead:
    """Lookahead in airbench's EMA form: slow weights `module` that, every `every` optimizer steps, move
    towards the trained (fast) weights by 1 - decay, after which the fast weights are set to them. The decay
    grows with the schedule's progress, `base_decay` x (step / total)^3: nothing early, strong near the end.
    The step that completes the schedule hands the slow weights to the model (decay 1). Buffers (BatchNorm's
    running statistics) are averaged like the weights."""

    def __init__(self, model: nn.Module, *, every: int = 5, base_decay: float = 0.95**5) -> None:
        self.module = copy.deepcopy(model).eval()
        self.every, self.base_decay = every, base_decay
        for p in self.module.parameters():
            p.requires_grad_(False)

    def decay_at(self, step: int, total: int) -> float | None:
        """The decay of the update after optimizer step `step` of `total`; None: no update at this step."""
        if step >= total:
            return 1.0
        return self.base_decay * (step / total) ** 3 if step % self.every == 0 else None

    @torch.no_grad()
    def update(self, model: nn.Module, *, step: int, total: int) -> None:
        decay = self.decay_at(step, total)
        if decay is None:
            return
        for slow, fast in zip(self.module.state_dict().values(), model.state_dict().values()):
            if slow.dtype.is_floating_point:
                slow.lerp_(fast.detach(), 1.0 - decay)
            else:
                slow.copy_(fast)
            fast.copy_(slow)


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU and CUDA, fp16 autocast on CUDA; fp32 = no autocast."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


class Criterion(Protocol):
    """(images, logits, soft targets) -> loss, where `images` are what a teacher sees (the student's batch,
    or with `StepContext.teacher_sees_full` the full-size images its windows were cut from). A criterion that
    runs a teacher reports its time and identity; the plain cross-entropy returns None for both."""

    identity: Optional[dict]  # what a checkpoint records about the teacher

    def __call__(self, images: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor: ...

    def pop_teacher_time(self) -> Optional[float]:
        """Seconds spent in the teacher since the last call."""


@dataclass
class StepContext:
    """Everything one optimisation step needs besides the batch."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: object  # CosineWarmupSchedule: .step() once per optimizer step
    criterion: Criterion
    device: torch.device
    precision: str = "fp32"
    accum_steps: int = 1
    clip_grad_norm: Optional[float] = None  # for optimizers without built-in clipping (AdamW, SGD)
    scaler: Optional[torch.amp.GradScaler] = None  # fp16 only
    ema: Optional[ModelEma] = None
    lookahead: Optional[Lookahead] = None  # optim.lookahead
    mixup: Optional[Callable] = None  # (x, y) -> (x, soft targets)
    augment: Optional[BatchAugment] = None  # uint8 batch -> augmented float batch (data.batch_augment)
    teacher_sees_full: bool = False  # the criterion gets the augment's full-size view (distill.teacher_view)
    # Called when a step's gradients are not finite (that step is skipped): True when it changed `model` so that
    # training can go on (a compiled step falling back, train/parts.py), False to stop the run.
    on_nonfinite_grads: Optional[Callable[[], bool]] = None


@dataclass(frozen=True)
class EpochCarry:
    """Where an epoch stands after an optimizer step: what a mid-epoch checkpoint keeps of it."""

    step: int = 0  # optimizer steps done in this epoch
    loss_sum: float | torch.Tensor = 0.0  # training loss summed over the images seen (this process)
    seen: int = 0  # images seen in this epoch (this process)


@dataclass(frozen=True)
class TrainStats:
    train_loss: float  # mean over the epoch's images (all processes)
    images_per_s: float  # all processes together
    lr: float  # of the first parameter group, after the last step
    epoch_time_s: float
    steps: int  # optimizer steps taken in the epoch (including those before a resume)
    stopped: bool = False  # `after_step` asked to stop before the loader ended


@dataclass(frozen=True)
class EvalStats:
    loss: float  # mean cross-entropy
    top1: float  # percent
    top5: float  # percent (top-k with k = min(5, classes))
    count: int  # images evaluated
    confusion: torch.Tensor  # (classes, classes) int64 counts, rows = true class


def train_one_epoch(
    ctx: StepContext,
    loader: Iterable,
    *,
    epoch: int,
    progress: bool = True,
    max_steps: int | None = None,
    carry: EpochCarry | None = None,
    after_step: Callable[[EpochCarry], bool] | None = None,
) -> TrainStats:
    """One pass over `loader` (or up to `max_steps` optimizer steps). A resumed epoch passes the `carry`
    its checkpoint kept (and a loader that skips the batches already done); `after_step(carry)` runs after
    every optimizer step and returns True to stop there."""
    model, opt = ctx.model, ctx.optimizer
    model.train()
    carry = carry or EpochCarry()
    total_loss = torch.tensor(float(carry.loss_sum), device=ctx.device)
    seen, steps, stopped = carry.seen, carry.step, False
    start = time.perf_counter()
    bar = tqdm(
        loader,
        desc=f"epoch {epoch}",
        disable=None if (progress and dist.is_main()) else True,
        leave=False,
        dynamic_ncols=True,
    )
    opt.zero_grad(set_to_none=True)
    for i, (images, labels) in enumerate(bar):
        if max_steps is not None and steps >= max_steps:  # (checked first: a resumed epoch may be done already)
            break
        images = images.to(ctx.device, non_blocking=True)
        labels = labels.to(ctx.device, non_blocking=True)
        teacher_images = None  # the criterion's teacher sees the student's batch
        if ctx.augment is not None and ctx.teacher_sees_full:
            images, teacher_images = ctx.augment.views(images)
        elif ctx.augment is not None:
            images = ctx.augment(images)
        images, targets = ctx.mixup(images, labels) if ctx.mixup is not None else (images, labels)
        boundary = (i + 1) % ctx.accum_steps == 0
        sync = contextlib.nullcontext() if boundary or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(ctx.device, ctx.precision):
                logits = model(images)
            loss = ctx.criterion(images if teacher_images is None else teacher_images, logits, targets)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"loss is {loss.item()} at epoch {epoch}, step {i}: stopping; "
                    "the last good checkpoint is kept (lower optim.lr or use fp32)"
                )
            scaled = loss / ctx.accum_steps
            (ctx.scaler.scale(scaled) if ctx.scaler else scaled).backward()
        if boundary and not _optimizer_step(ctx):  # gradients not finite: no step taken, the batch dropped
            if ctx.on_nonfinite_grads is None or not ctx.on_nonfinite_grads():
                raise NonFiniteLossError(
                    f"gradients are not finite at epoch {epoch}, step {i}: stopping; "
                    "the last good checkpoint is kept (lower optim.lr or use fp32)"
                )
            model = ctx.model
            model.train()
            continue
        if boundary:
            steps += 1
        total_loss += loss.detach() * images.shape[0]
        seen += images.shape[0]
        if boundary and after_step is not None and after_step(EpochCarry(steps, total_loss, seen)):
            stopped = True
            break
        if not bar.disable and i % 10 == 0:
            elapsed = time.perf_counter() - start
            bar.set_postfix(
                loss=f"{loss.item():.3f}",
                lr=f"{opt.param_groups[0]['lr']:.2e}",
                img_s=f"{(seen - carry.seen) * dist.world_size() / max(elapsed, 1e-9):.0f}",
            )
    elapsed = time.perf_counter() - start
    mean_loss = dist.all_reduce_sum(torch.stack([total_loss, torch.tensor(float(seen), device=ctx.device)]))
    return TrainStats(
        train_loss=(mean_loss[0] / mean_loss[1].clamp_min(1)).item(),
        images_per_s=(seen - carry.seen) * dist.world_size() / max(elapsed, 1e-9),
        lr=opt.param_groups[0]["lr"],
        epoch_time_s=elapsed,
        steps=steps,
        stopped=stopped,
    )


def _optimizer_step(ctx: StepContext) -> bool:
    """Clip, step, schedule, average. False, with no step taken, when the gradients are not finite (with fp16's
    loss scaler, which skips such steps itself and lowers its scale, always True)."""
    params = [p for g in ctx.optimizer.param_groups for p in g["params"]]
    if ctx.scaler is not None:
        ctx.scaler.unscale_(ctx.optimizer)
        if ctx.clip_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, ctx.clip_grad_norm)
        ctx.scaler.step(ctx.optimizer)
        ctx.scaler.update()
    else:
        if ctx.clip_grad_norm:
            norm = torch.nn.utils.clip_grad_norm_(params, ctx.clip_grad_norm)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
        if not torch.isfinite(norm):
            ctx.optimizer.zero_grad(set_to_none=True)
            return False
        ctx.optimizer.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.schedule.step()
    if ctx.lookahead is not None:
        ctx.lookahead.update(dist.unwrap(ctx.model), step=ctx.schedule.last_step, total=ctx.schedule.total_steps)
    if ctx.ema is not None:
        ctx.ema.update(dist.unwrap(ctx.model))
    return True


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device,
    *,
    num_classes: int,
    precision: str = "fp32",
    progress: bool = False,
) -> EvalStats:
    """Top-1/top-5 (percent), mean cross-entropy and the confusion matrix (rows = true class), summed over
    all processes when distributed (each process evaluates its own shard)."""
    model.eval()
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss, top-5 hits, count
    k = min(5, num_classes)
    for images, labels in tqdm(
        loader, desc="eval", disable=None if (progress and dist.is_main()) else True, leave=False
    ):
        images, labels = images.to(device), labels.to(device)
        with autocast(device, precision):
            logits = model(images)
        logits = logits.float()
        sums[0] += F.cross_entropy(logits, labels, reduction="sum")
        sums[1] += (logits.topk(k, dim=-1).indices == labels[:, None]).any(-1).sum()
        sums[2] += labels.numel()
        confusion.index_put_((labels, logits.argmax(-1)), torch.ones_like(labels, dtype=torch.float64), accumulate=True)
    sums, confusion = dist.all_reduce_sum(sums), dist.all_reduce_sum(confusion)
    n = max(sums[2].item(), 1.0)
    return EvalStats(
        loss=sums[0].item() / n,
        top1=100.0 * confusion.trace().item() / n,
        top5=100.0 * sums[1].item() / n,
        count=int(sums[2].item()),
        confusion=confusion.long().cpu(),
    )
