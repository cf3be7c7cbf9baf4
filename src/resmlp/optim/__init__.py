"""Optimizers, weight-decay parameter groups and the lr schedule of the ResMLP training recipe."""

from .lamb import Lamb, global_grad_norm
from .muon import MuonAdamW, muon_param_names
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
    "MuonAdamW",
    "build_optimizer",
    "clips_internally",
    "cosine_warmup_lr",
    "global_grad_norm",
    "muon_param_names",
    "param_groups",
    "scale_lr",
    "split_decay_names",
]
