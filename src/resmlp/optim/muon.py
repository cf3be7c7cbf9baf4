"""Muon on the blocks' weight matrices, AdamW on everything else, behind one optimizer interface.

Muon (torch.optim.Muon) orthogonalises the momentum of 2-D weight matrices (Newton-Schulz), which is
meant for hidden matrices only: here the cross-patch A (N x N) and the channel MLP's B and C of every
block. The patch projection (a 4-D convolution kernel), the head, biases, Aff and LayerScale parameters go
to AdamW. With `adjust_lr_fn="match_rms_adamw"` Muon's update has AdamW's RMS, so both take the same lr
and weight decay and one cosine schedule drives every group.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

MUON_MOMENTUM = 0.95  # the momentum Muon is published and tuned with


def muon_param_names(model: nn.Module) -> list[str]:
    """Trainable 2-D weight matrices inside the blocks (A, B, C for ResMLP; the token/channel MLPs for Mixer)."""
    return [n for n, p in model.named_parameters() if p.requires_grad and p.ndim == 2 and n.startswith("blocks.")]


class MuonAdamW:
    """Two optimizers stepped together; `param_groups` lists Muon's groups then AdamW's, so a schedule
    that sets each group's lr drives both."""

    def __init__(self, muon_groups: list[dict], adamw_groups: list[dict], *, lr: float, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        self.muon = torch.optim.Muon(muon_groups, lr=lr, weight_decay=weight_decay, momentum=MUON_MOMENTUM,
                                     adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        self.defaults: dict[str, Any] = {"lr": lr, "weight_decay": weight_decay}

    @property
    def param_groups(self) -> list[dict]:
        return self.muon.param_groups + self.adamw.param_groups

    @property
    def state(self) -> dict:
        return {**self.muon.state, **self.adamw.state}

    def step(self, closure: Callable[[], float] | None = None) -> None:
        if closure is not None:
            raise ValueError("MuonAdamW.step takes no closure")
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])
