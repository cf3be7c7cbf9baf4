"""Optimizers, weight-decay parameter groups and the lr schedule of the ResMLP training recipe."""

from resmlp.optim.lamb import Lamb, global_grad_norm
from resmlp.optim.param_groups import (
    OPTIMIZER_NAMES,
    build_optimizer,
    param_groups,
    split_decay_names,
)
from resmlp.optim.schedule import CosineWarmupSchedule, cosine_warmup_lr, scale_lr

__all__ = [
    "OPTIMIZER_NAMES",
    "CosineWarmupSchedule",
    "Lamb",
    "build_optimizer",
    "cosine_warmup_lr",
    "global_grad_norm",
    "param_groups",
    "scale_lr",
    "split_decay_names",
]
