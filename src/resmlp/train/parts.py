"""The wired parts of a run (`Run`: what `run.build` makes, `checkpointing.restore` fills and the loop drives)
and where it stands (`Progress`: checkpointed, restored on resume)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..config import TrainConfig
from ..data.build import DataSplits
from ..data.resumable import PositionSampler
from ..data.transforms import with_output_size
from ..models.init import grid_shape
from ..models.layers import to_pair
from ..models.resample import resample_optimizer_state
from ..rundir import RunDir
from . import distributed as dist
from .engine import EpochCarry, StepContext
from .progressive import METHODS, Size, follow_window


def wrap_model(model: nn.Module, device: torch.device, *, compile: bool) -> nn.Module:
    """What the training step calls: `model` under DDP when several processes train, compiled when asked. Compiled
    for static shapes: each batch shape (a progressive size, the epoch's short last batch) gets its own graph, where
    PyTorch's default would switch to slower shape-generic kernels at the second shape. Evaluation scores the plain
    model (train/loop.py)."""
    wrapped = dist.wrap(model, device)
    return torch.compile(wrapped, dynamic=False) if compile else wrapped


@dataclass
class Run:
    """The wired parts of a run."""

    cfg: TrainConfig
    run_dir: RunDir
    rank: int
    world: int
    base_size: Any  # model.img_size: the transforms' crop size; progressive sizes are reached from it
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
    compiled: bool  # the training step runs through torch.compile (run.compile resolved: device.resolve_compile)

    def fall_back_from_compile(self) -> bool:
        """`ctx.on_nonfinite_grads` of a compiled run: the compiled step gave non-finite gradients (that step was
        skipped), so the step runs eager from now on. False when it was eager already: the gradients are the
        model's own, and the run stops.

        Seen for real: on an AMX Xeon (family 6 model 207, torch 2.13) Inductor's bf16 backward of a ResMLP block
        over 64 patches gave NaN gradients where eager did not (36 and 49 patches were right); with 256-bit
        vector kernels (`torch._inductor.config.cpp.simdlen=256`) they were right but slower than eager."""
        if not self.compiled:
            return False
        self.compiled = False
        self.ctx.model = wrap_model(self.model, self.ctx.device, compile=False)
        if self.rank == 0:
            print(
                "the compiled step gave non-finite gradients: step skipped; the step runs eager from now on", flush=True
            )
        return True

    def resize(self, size: Size, *, moments: bool = True) -> bool:
        """Move the run to images of `size` (progressive resizing): the model and its EMA resampled, with the
        optimizer moments when `moments`, and the transforms' output size. Whether anything changed."""
        new = to_pair(size)
        if to_pair(self.model.stem.img_size) == new:
            return False
        mode = self.cfg.progressive.mode
        old_grid, old_size = grid_shape(self.model), to_pair(self.model.stem.img_size)
        self.model.set_input_size(new, method=METHODS[mode])
        if mode == "crop":
            follow_window(self.model, old_size)
        if moments:
            resample_optimizer_state(
                self.ctx.optimizer, self.model, old_grid, grid_shape(self.model), method=METHODS[mode]
            )
        for average in (self.ctx.ema, self.ctx.lookahead):
            if average is not None:
                average.module.set_input_size(new, method=METHODS[mode])
        if self.world > 1:  # DDP's buckets were laid out for the old shapes
            self.ctx.model = wrap_model(self.model, self.ctx.device, compile=self.compiled)
        out = None if new == to_pair(self.base_size) else new
        if self.ctx.augment is not None:  # data.batch_augment: the batches reach the size, not the images
            self.ctx.augment = self.ctx.augment.with_output_size(out, mode)
        else:
            self.data.train.transform = with_output_size(self.data.train.transform, out, mode=mode, train=True)
        self.data.val.transform = with_output_size(self.data.val.transform, out, mode=mode, train=False)
        return True


@dataclass
class Progress:
    """Where a run stands."""

    planned_epochs: float  # a fitted plan may end in part of an epoch (train/budget.py)
    epoch: int = 0  # epochs done (a partial last epoch counts once it is done)
    best_val_top1: float = -1.0
    wall_time_s: float = 0.0
    carry: EpochCarry = EpochCarry()  # how far into epoch `epoch` (a mid-epoch checkpoint)
    stopped_by: Optional[int] = None  # the signal that stopped this session

    def position(self, steps_per_epoch: int) -> str:
        """Where the run stands, in words: 'epoch 3, step 5 of 20' or 'the end of epoch 2'."""
        if self.carry.step:
            return f"epoch {self.epoch + 1}, step {self.carry.step} of {steps_per_epoch}"
        return f"the end of epoch {self.epoch}"
