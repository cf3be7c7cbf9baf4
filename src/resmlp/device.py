"""Which device a command runs on (one rule for `--device` / `run.device`) and what its hardware does fast."""
from __future__ import annotations

import functools
from pathlib import Path

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


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS); read once."""
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return frozenset()


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether `device` multiplies bf16 matrices in hardware (AVX512-BF16 / AMX on x86, Ampere+ on CUDA).

    Elsewhere bf16 is emulated: on an AMD EPYC VM with AVX2 only, a bf16 training step of the CIFAR
    recipe's model ran 24x slower than fp32 (3.8 vs 92 img/s), so "auto" precision stays fp32 there.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def auto_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """"auto" -> bf16 where `device` has native bf16, else fp32; any other precision as given. The one
    rule for `run.precision` in training and `--precision` at inference."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision
