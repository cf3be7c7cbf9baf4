"""Which device a command runs on (one rule for `--device` / `run.device`) and what its hardware does fast."""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from pathlib import Path

import torch


def resolve_device(name: str = "auto", *, local_rank: int = 0) -> torch.device:
    """ "auto" -> this process's GPU when CUDA is available (cuda:<local_rank> under torchrun), else the CPU;
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


def place(model: torch.nn.Module, device: torch.device | str) -> torch.nn.Module:
    """`model` moved to `device`, its 4-D weights in NHWC (channels_last) memory format when the model's class
    asks for it (`channels_last = True`: the conv nets, whose convolutions oneDNN and cuDNN run faster that way;
    NCHW inputs then come out of the first conv in NHWC). In place, like `Module.to`; returns the model."""
    fmt = torch.channels_last if getattr(model, "channels_last", False) else torch.preserve_format
    return model.to(device, memory_format=fmt)


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS); read once."""
    try:
        return frozenset(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return frozenset()


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether `device` multiplies bf16 matrices in hardware fast enough to pay for the casts: AMX on x86,
    AVX512-BF16 on an AMD CPU, Ampere+ on CUDA.

    On a 2-core AMD EPYC VM (Zen 5, AVX512-BF16, no AMX) bf16 autocast trained the CIFAR recipe's model at 2.0x
    fp32's images/s (468 vs 232 at 32 px) and its conv-net teacher at 1.8x (docs/results.md#precision-per-cpu-kind):
    AMD issues the bf16 dot product at the rate of an fp32 FMA, two bf16 pairs per lane. On Intel it issues at half
    that rate: a Xeon VM with AVX512-BF16 but no AMX trained at 0.77x fp32 (177 vs 231 img/s) and ran inference at
    0.70-0.83x; an AMD EPYC VM with AVX2 only emulates bf16 (24x slower: 3.8 vs 92 img/s). "auto" precision
    stays fp32 on both.
    """
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    flags = cpu_flags()
    return "amx_bf16" in flags or {"AuthenticAMD", "avx512_bf16"} <= flags


@functools.lru_cache(maxsize=None)
def compile_unavailable(device_type: str) -> str | None:
    """Why torch.compile (Inductor) cannot build kernels for `device_type` on this machine, or None when it can:
    on CPU it needs a C++ compiler (g++, or the one CXX names), on CUDA the Triton package. Checked once."""
    if device_type == "cuda":
        try:
            import triton  # noqa: F401, PLC0415 - only whether it is there
        except ImportError:
            return "torch.compile on CUDA needs Triton (pip install triton)"
        return None
    if device_type != "cpu":
        return f"torch.compile is not used on {device_type} here"
    from torch._inductor import config  # noqa: PLC0415 - Inductor only when asked

    try:
        from torch._inductor.cpp_builder import get_cpp_compiler  # noqa: PLC0415

        get_cpp_compiler()
    except Exception:  # noqa: BLE001 - Inductor's InvalidCxxCompiler, or an API that moved: no compiled kernels
        searched = config.cpp.cxx if isinstance(config.cpp.cxx, (list, tuple)) else (config.cpp.cxx,)
        wanted = ", ".join(str(c) for c in searched if c) or os.environ.get("CXX", "g++")
        return f"torch.compile on CPU needs a C++ compiler ({wanted} not found; install one or point CXX at it)"
    return None


def resolve_compile(setting: bool | str, device: torch.device | str) -> tuple[bool, str | None]:
    """`run.compile` -> (compiled, why not): false -> eager; "auto" -> compiled where Inductor can build kernels
    on `device`, else eager and the reason; true -> compiled, and a clear error naming what is missing where it
    cannot."""
    if setting is False:
        return False, None
    missing = compile_unavailable(torch.device(device).type)
    if missing is None:
        return True, None
    if setting == "auto":
        return False, missing
    raise ValueError(f"run.compile=true: {missing}; or set run.compile=auto (eager where it cannot) or false")


def auto_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """ "auto" -> bf16 where `device` has native bf16, else fp32; any other precision as given. The one
    rule for `run.precision` in training and `--precision` at inference."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


# glibc's mallopt(3) parameters and defaults; 32 MiB is the ceiling it accepts for the mmap threshold on 64-bit.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
GLIBC_DEFAULT_THRESHOLD = 128 * 1024
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
TRIM_THRESHOLD_RETAIN = 2**31 - 1  # the largest C int: never give the top of the heap back


def glibc_mallopt():
    """glibc's mallopt(3), or None off Linux or without glibc (e.g. musl, macOS)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return None


def retain_freed_cpu_memory(retain: bool = True) -> bool:
    """Keep freed CPU tensors' memory in the process (glibc's allocator) instead of returning it to the OS.

    By default glibc serves large blocks from fresh mappings and unmaps them when freed, and gives the heap's
    unused top back once it exceeds a threshold (both thresholds start at 128 KiB and grow with the blocks
    freed), so each training step's activations (16 MiB apiece for the CIFAR recipe's MLP at batch 128) are
    page-faulted in again, page by page: 50k faults and 0.17 s of kernel time per 1.1 s step on a 2-core EPYC
    VM. Serving blocks up to 32 MiB from the heap, and never trimming it, removes them (+8-10 % images/s,
    docs/results.md#recipe-levers), the effect of preloading jemalloc or tcmalloc; the process keeps its peak memory.
    `retain=False` fixes both thresholds at glibc's start-up 128 KiB (for A/B benchmarks in one process).
    Returns whether it applied: False where there is no glibc, and nothing changes.
    """
    mallopt = glibc_mallopt()
    if mallopt is None:
        return False
    mmap_threshold = MMAP_THRESHOLD_MAX if retain else GLIBC_DEFAULT_THRESHOLD
    trim_threshold = TRIM_THRESHOLD_RETAIN if retain else GLIBC_DEFAULT_THRESHOLD
    return mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 and mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1


def flush_denormals() -> bool:
    """Flush denormal floats (below 1.2e-38 in magnitude) to zero in the CPU math of this process, every thread.

    Denormals take a slow path in the CPU's float units. The mode is per thread and new threads inherit it, so
    after setting it here the OpenMP thread pools already started (PyTorch's and Inductor's) are paused: their
    threads restart, with the mode, at the next parallel region. The compiled training step ran a fifth slower
    without it once its weights had trained (docs/results.md#the-students-step-compiled). Returns whether the CPU
    supports the mode (x86 with SSE3); where it does not, nothing changes."""
    if not torch.set_flush_denormal(True):
        return False
    for runtime in _loaded_openmp_runtimes():
        pause = getattr(runtime, "omp_pause_resource_all", None)  # OpenMP 5.0; 1 = omp_pause_soft
        if pause is not None:
            pause(1)
    return True


def _loaded_openmp_runtimes() -> list[ctypes.CDLL]:
    """The OpenMP runtimes (libgomp, libiomp, libomp) mapped into this process; Linux only."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return []
    paths = sorted(
        {line.split()[-1] for line in maps if "/lib" in line and ("gomp" in line or "iomp" in line or "libomp" in line)}
    )
    runtimes = []
    for path in paths:
        try:
            runtimes.append(ctypes.CDLL(path))
        except OSError:
            continue
    return runtimes
