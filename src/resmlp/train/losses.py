"""Training objectives on soft targets (Mixup/CutMix and label smoothing make every target a distribution).

Distillation (DeiT's procedure, as used for the paper's best ResMLP results): ResMLP has a single head,
so both terms act on the same student logits z_s; with mixed soft targets y:
    hard:  L = (1 - alpha) CE(z_s, y) + alpha CE(z_s, argmax z_t)
    soft:  L = (1 - alpha) CE(z_s, y) + alpha tau^2 KL(softmax(z_t / tau) || softmax(z_s / tau))
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DISTILL_KINDS = ("hard", "soft")


def soft_target_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against soft targets (mixed, label-smoothed one-hots): mean_b sum_k -t_bk log p_bk."""
    return torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()


class CrossEntropyCriterion:
    """The plain objective: cross-entropy against the (mixed, smoothed) soft targets; no teacher. A criterion
    maps (images, logits, soft targets) to the loss; `train.distill.DistillationCriterion` is the other one."""

    identity = None  # the teacher's identity (none here), recorded in checkpoints and summaries

    def __call__(self, images: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return soft_target_cross_entropy(logits, targets)

    def pop_teacher_time(self) -> None:
        return None


def distillation_loss(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    kind: str,
    alpha: float,
    tau: float,
) -> torch.Tensor:
    """The DeiT distillation objective on one set of student logits (see the module docstring)."""
    base = soft_target_cross_entropy(student_logits, targets)
    if alpha == 0:
        return base
    s = student_logits.float()
    t = teacher_logits.float()
    if kind == "hard":
        distill = F.cross_entropy(s, t.argmax(dim=-1))
    elif kind == "soft":
        distill = F.kl_div(
            F.log_softmax(s / tau, dim=-1), F.log_softmax(t / tau, dim=-1), reduction="batchmean", log_target=True
        ) * (tau * tau)
    else:
        raise ValueError(f"distill.kind={kind!r}: expected one of {', '.join(DISTILL_KINDS)}")
    return (1 - alpha) * base + alpha * distill
