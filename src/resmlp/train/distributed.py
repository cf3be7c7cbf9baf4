"""Multi-process training through PyTorch's own engine: `torchrun --nproc_per_node=K -m resmlp train ...`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE; we use gloo on CPU and nccl on CUDA.
Only rank 0 logs and writes files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as tdist
from torch import nn


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def init(device_type: str) -> tuple[int, int, int]:
    """Join the process group when launched by torchrun; returns (rank, local_rank, world_size)."""
    world = env_world_size()
    if world <= 1 or tdist.is_initialized():
        return rank(), int(os.environ.get("LOCAL_RANK", "0")), world_size()
    backend = "nccl" if device_type == "cuda" else "gloo"
    tdist.init_process_group(backend=backend)
    return tdist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), tdist.get_world_size()


def shutdown() -> None:
    """Leave the process group together: the barrier keeps a rank that finished first (rank 1 while rank 0
    still writes its summary) from tearing down its connections while a peer may still use them."""
    if tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


def rank() -> int:
    return tdist.get_rank() if tdist.is_initialized() else 0


def world_size() -> int:
    return tdist.get_world_size() if tdist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def local_world_size() -> int:
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", "1")))


def default_threads() -> int:
    """Intra-op threads per process: the cores divided among the processes on this machine."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, local_world_size()))


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if tdist.is_initialized() and tdist.get_world_size() > 1:
        t = t.clone()
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return t


def all_reduce_max(t: torch.Tensor) -> torch.Tensor:
    if tdist.is_initialized() and tdist.get_world_size() > 1:
        t = t.clone()
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return t


def barrier() -> None:
    if tdist.is_initialized():
        tdist.barrier()


def wrap(model: nn.Module, device: torch.device) -> nn.Module:
    if not (tdist.is_initialized() and tdist.get_world_size() > 1):
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under DDP / torch.compile wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
