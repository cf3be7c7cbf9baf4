"""Muon on the blocks' weight matrices, AdamW on everything else, behind one optimizer interface; and
Muon on a conv net's kernels with Nesterov SGD on the rest (`MuonSGD`, below).

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
CONV_MUON_MOMENTUM = 0.6  # NormalizedMuon's, as airbench94_muon tuned it for the conv net
NS_COEFFICIENTS = (torch_muon.DEFAULT_A, torch_muon.DEFAULT_B, torch_muon.DEFAULT_C)  # torch's quintic iteration


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


class OptimizerPair:
    """Two optimizers stepped together as one: `param_groups` lists the first's groups then the second's, so a
    schedule that sets each group's lr drives both; the state dict keeps each under its name."""

    def __init__(self, first: Any, second: Any, *, names: tuple[str, str], defaults: dict[str, Any]) -> None:
        self.first, self.second, self.names = first, second, names
        self.defaults = defaults

    @property
    def param_groups(self) -> list[dict]:
        return self.first.param_groups + self.second.param_groups

    @property
    def state(self) -> dict:
        return {**self.first.state, **self.second.state}

    def step_first(self) -> None:
        self.first.step()

    def step(self, closure: Callable[[], float] | None = None) -> None:
        if closure is not None:
            raise ValueError(f"{type(self).__name__}.step takes no closure")
        self.step_first()
        self.second.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.first.zero_grad(set_to_none=set_to_none)
        self.second.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {self.names[0]: self.first.state_dict(), self.names[1]: self.second.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.first.load_state_dict(state[self.names[0]])
        self.second.load_state_dict(state[self.names[1]])


class MuonAdamW(OptimizerPair):
    """Muon on the blocks' weight matrices (`.muon`), AdamW on the rest (`.adamw`)."""

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
        super().__init__(
            self.muon, self.adamw, names=("muon", "adamw"), defaults={"lr": lr, "weight_decay": weight_decay}
        )

    def step_first(self) -> None:
        with fp32_newton_schulz() if self.orthogonalise_in_fp32 else contextlib.nullcontext():
            self.muon.step()


def conv_kernel_names(model: nn.Module) -> list[str]:
    """Trainable 2-D convolution kernels (4-D weights) inside the blocks: the conv net's 3 x 3 convs, each
    followed by a BatchNorm (the stem and the head are left out)."""
    return [n for n, p in model.named_parameters() if p.requires_grad and p.ndim == 4 and n.startswith("blocks.")]


class NormalizedMuon(torch.optim.Optimizer):
    """Muon for convolution kernels that a BatchNorm follows (airbench94_muon's form, Jordan 2024).

    A BatchNorm after the conv makes the kernel's scale free, so each step first renormalises the kernel to
    Frobenius norm sqrt(out_channels) and then subtracts `lr` x the orthogonalised Nesterov momentum of its
    gradient, the kernel seen as an (out, in x k x k) matrix: every step turns the kernel by about `lr`,
    whatever the gradient's scale. No weight decay (the norm is fixed). The orthogonalisation is
    torch.optim.Muon's Newton-Schulz iteration, in bf16 where bf16 is native and in fp32 elsewhere.
    """

    def __init__(self, params: Any, *, lr: float, momentum: float = 0.6, ns_steps: int = 5) -> None:
        if lr <= 0 or not 0 <= momentum < 1:
            raise ValueError(f"NormalizedMuon: expected lr > 0 and momentum in [0, 1), got {lr}, {momentum}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "ns_steps": ns_steps})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> None:
        if closure is not None:
            raise ValueError("NormalizedMuon.step takes no closure")
        for group in self.param_groups:
            beta = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"].mul_(beta).add_(p.grad)
                nesterov = p.grad.add(buf, alpha=beta)
                orthogonalise = torch_muon._zeropower_via_newtonschulz if native_bf16(p.device) else newton_schulz_fp32
                update = orthogonalise(nesterov.reshape(len(p), -1), NS_COEFFICIENTS, group["ns_steps"], 1e-7)
                p.mul_(len(p) ** 0.5 / p.norm().clamp_min(1e-12))
                p.add_(update.view_as(p).to(p.dtype), alpha=-group["lr"])


class MuonSGD(OptimizerPair):
    """:class:`NormalizedMuon` on the blocks' conv kernels (`.muon`), Nesterov SGD on the rest (`.sgd`):
    airbench94_muon's optimizer for the fast-CIFAR conv net."""

    def __init__(
        self,
        kernels: list[nn.Parameter],
        sgd_groups: list[dict],
        *,
        lr: float,
        muon_lr: float,
        momentum: float,
        weight_decay: float,
    ) -> None:
        self.muon = NormalizedMuon(kernels, lr=muon_lr, momentum=CONV_MUON_MOMENTUM)
        self.sgd = torch.optim.SGD(sgd_groups, lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
        super().__init__(self.muon, self.sgd, names=("muon", "sgd"), defaults={"lr": lr, "weight_decay": weight_decay})
