"""Which device a command runs on: one rule for `--device` / `run.device`."""
from __future__ import annotations

import torch


def resolve_device(name: str = "auto", *, local_rank: int = 0) -> torch.device:
    """"auto" -> this process's GPU when CUDA is available (cuda:<local_rank> under torchrun), else the CPU;
    anything else is taken as a torch device name, and asking for CUDA without it is a clear error."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name}: CUDA is not available on this machine; use cpu")
    return device
