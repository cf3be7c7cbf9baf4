"""LAMB (You et al. 2019), the optimizer of the ResMLP / DeiT training recipe.

ResMLP (Touvron et al. 2021, Table 8 / Sec. 4) trains with LAMB, lr 5e-3, weight decay 0.2. The
variant here follows the one those papers used: Adam moments with bias correction, decoupled weight
decay inside the update, a per-tensor trust ratio ||w|| / ||update||, and global gradient-norm
clipping performed by the optimizer itself before the moments are updated.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor


def global_grad_norm(params: Iterable[Tensor]) -> Tensor | None:
    """L2 norm over the gradients of all ``params`` together, or None when none has a gradient.

    The result is a 0-dim tensor on the first gradient's device: no host sync.
    """
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return None
    device = grads[0].device
    norms = [torch.linalg.vector_norm(g.detach(), 2.0).to(device) for g in grads]
    return torch.linalg.vector_norm(torch.stack(norms), 2.0)


def _trust_ratio(weight: Tensor, update: Tensor) -> Tensor:
    """||w|| / ||update|| as a 0-dim tensor, 1 where either norm is 0 (LAMB, You et al. Alg. 2)."""
    w_norm = torch.linalg.vector_norm(weight, 2.0)
    u_norm = torch.linalg.vector_norm(update, 2.0)
    one = torch.ones_like(w_norm)
    return torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, one)


class Lamb(torch.optim.Optimizer):
    """Layer-wise Adaptive Moments optimizer with global gradient clipping.

    Per step, for every parameter ``w`` with gradient ``g``:

    1. ``g <- g * min(1, max_grad_norm / ||G||)`` where ``||G||`` is the L2 norm over the gradients
       of *all* groups. ``p.grad`` is left untouched: the clipped gradient is a temporary.
    2. ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``;
       ``m_hat = m / (1 - b1^t)``, ``v_hat = v / (1 - b2^t)``.
    3. ``u = m_hat / (sqrt(v_hat) + eps) + weight_decay * w``.
    4. ``r = ||w|| / ||u||`` (1 where either norm is 0) if the group's ``weight_decay != 0`` or
       ``always_adapt``, else ``r = 1``; with ``trust_clip`` the ratio is capped at 1.
    5. ``w <- w - lr * r * u``.

    Args:
        params: parameters or parameter groups (see :func:`resmlp.optim.param_groups`).
        lr: learning rate.
        betas: coefficients of the first and second moment running averages.
        eps: added to ``sqrt(v_hat)`` for numerical stability.
        weight_decay: decoupled weight decay, added to the update before the trust ratio.
        max_grad_norm: clip threshold on the global gradient norm; None disables clipping.
        trust_clip: cap the trust ratio at 1.
        always_adapt: apply the trust ratio also to groups without weight decay.
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict],
        lr: float = 5e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        max_grad_norm: float | None = 1.0,
        trust_clip: bool = False,
        always_adapt: bool = False,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"Lamb: lr must be >= 0, got {lr}")
        if eps < 0.0:
            raise ValueError(f"Lamb: eps must be >= 0, got {eps}")
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"Lamb: betas must lie in [0, 1), got {betas}")
        if weight_decay < 0.0:
            raise ValueError(f"Lamb: weight_decay must be >= 0, got {weight_decay}")
        if max_grad_norm is not None and max_grad_norm <= 0.0:
            raise ValueError(f"Lamb: max_grad_norm must be > 0 or None, got {max_grad_norm}")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            max_grad_norm=max_grad_norm,
            trust_clip=trust_clip,
            always_adapt=always_adapt,
        )
        super().__init__(params, defaults)

    def _clip_divisor(self) -> Tensor | None:
        """max(1, ||G|| / max_grad_norm) over all groups, or None when clipping is off."""
        max_norm = self.defaults["max_grad_norm"]
        if max_norm is None:
            return None
        norm = global_grad_norm(p for group in self.param_groups for p in group["params"])
        if norm is None:
            return None
        return torch.clamp(norm / max_norm, min=1.0)

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        divisor = self._clip_divisor()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Lamb does not support sparse gradients")
                grad = p.grad if divisor is None else p.grad / divisor.to(p.grad.device)
                self._update_param(p, grad, group)
        return loss

    def _update_param(self, p: Tensor, grad: Tensor, group: dict) -> None:
        """Apply steps 2-5 of the class docstring to one parameter."""
        beta1, beta2 = group["betas"]
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = state["step"]
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)

        bias_correction1 = 1.0 - beta1**step
        bias_correction2 = 1.0 - beta2**step
        denom = (exp_avg_sq / bias_correction2).sqrt_().add_(group["eps"])
        update = (exp_avg / bias_correction1).div_(denom)

        weight_decay = group["weight_decay"]
        if weight_decay != 0.0:
            update.add_(p, alpha=weight_decay)
        if weight_decay != 0.0 or group["always_adapt"]:
            ratio = _trust_ratio(p, update)
            if group["trust_clip"]:
                ratio = torch.clamp(ratio, max=1.0)
            update.mul_(ratio)
        p.add_(update, alpha=-group["lr"])
