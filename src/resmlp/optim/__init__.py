"""Optimizers, weight-decay parameter groups and the lr schedule of the ResMLP training recipe."""

from .lamb import Lamb, global_grad_norm
from .param_groups import (
    OPTIMIZER_NAMES,
    build_optimizer,
    clips_internally,
    param_groups,
    split_decay_names,
)
from .schedule import CosineWarmupSchedule, cosine_warmup_lr, scale_lr

__all__ = [
    "OPTIMIZER_NAMES",
    "CosineWarmupSchedule",
    "Lamb",
    "build_optimizer",
    "clips_internally",
    "cosine_warmup_lr",
    "global_grad_norm",
    "param_groups",
    "scale_lr",
    "split_decay_names",
]
