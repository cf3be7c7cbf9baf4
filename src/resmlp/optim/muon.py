"""Muon on the blocks' weight matrices, AdamW on everything else, behind one optimizer interface.

Muon (torch.optim.Muon) orthogonalises the momentum of 2-D weight matrices (Newton-Schulz), which is
meant for hidden matrices only: here the cross-patch A (N x N) and the channel MLP's B and C of every
block (A optionally left to AdamW: `optim.muon_token_mixing: false`). The patch projection (a 4-D
convolution kernel), the head, biases, Aff and LayerScale parameters go to AdamW. With
`adjust_lr_fn="match_rms_adamw"` Muon's update has AdamW's RMS, so both take the same lr and weight decay
and one cosine schedule drives every group.

torch's Muon runs its Newton-Schulz iteration in bf16, which is cheap where bf16 matrix products are native
(AMX, CUDA) and emulated or slow elsewhere: on a 2-core AVX2-only EPYC one optimizer step of the CIFAR
recipe's model took 5.3 s; in fp32 a whole training step runs at 0.94x LAMB's. There the same iteration (torch's
coefficients and step count) runs in fp32 instead; everything else (momentum, Nesterov, lr adjustment, weight
decay) stays torch.optim.Muon's.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import torch
import torch.optim._muon as torch_muon
from torch import Tensor, nn

from ..device import native_bf16

MUON_MOMENTUM = 0.95  # the momentum Muon is published and tuned with


TOKEN_MIXING_MODULES = frozenset({"linear_tokens", "mlp_tokens"})  # a block's cross-patch A; Mixer's token MLP


def is_token_mixing(name: str) -> bool:
    """True for a parameter of a block's cross-patch layer (`blocks.3.linear_tokens.weight`)."""
    return not TOKEN_MIXING_MODULES.isdisjoint(name.split("."))


def muon_param_names(model: nn.Module, *, token_mixing: bool = True) -> list[str]:
    """Trainable 2-D weight matrices inside the blocks (A, B, C for ResMLP; the token/channel MLPs for Mixer);
    with `token_mixing=False` without the cross-patch ones (A; Mixer's token MLP), which then go to AdamW."""
    return [
        n
        for n, p in model.named_parameters()
        if p.requires_grad and p.ndim == 2 and n.startswith("blocks.") and (token_mixing or not is_token_mixing(n))
    ]


def newton_schulz_fp32(grad: Tensor, ns_coefficients: tuple[float, float, float], ns_steps: int, eps: float) -> Tensor:
    """torch.optim.Muon's quintic Newton-Schulz orthogonalisation of a 2-D `grad`, computed in fp32."""
    a, b, c = ns_coefficients
    x = grad.float()
    wide = x.size(0) <= x.size(1)
    x = x if wide else x.T  # iterate on the (short, long) orientation: X X^T is small
    x = x / x.norm().clamp(min=eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(ns_steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x if wide else x.T


@contextlib.contextmanager
def fp32_newton_schulz() -> Iterator[None]:
    """Within the block, torch.optim.Muon orthogonalises with :func:`newton_schulz_fp32`."""
    bf16_version = torch_muon._zeropower_via_newtonschulz
    torch_muon._zeropower_via_newtonschulz = newton_schulz_fp32
    try:
        yield
    finally:
        torch_muon._zeropower_via_newtonschulz = bf16_version


class MuonAdamW:
    """Two optimizers stepped together; `param_groups` lists Muon's groups then AdamW's, so a schedule
    that sets each group's lr drives both."""

    def __init__(
        self,
        muon_groups: list[dict],
        adamw_groups: list[dict],
        *,
        lr: float,
        weight_decay: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.muon = torch.optim.Muon(
            muon_groups, lr=lr, weight_decay=weight_decay, momentum=MUON_MOMENTUM, adjust_lr_fn="match_rms_adamw"
        )
        self.adamw = torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        first = muon_groups[0]["params"][0] if muon_groups and muon_groups[0]["params"] else None
        self.orthogonalise_in_fp32 = first is not None and not native_bf16(first.device)
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
        with fp32_newton_schulz() if self.orthogonalise_in_fp32 else contextlib.nullcontext():
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
