"""What every export shares: a CPU fp32 copy to trace, example inputs, and the check that the exported model
reproduces the eager one (a failed check leaves no file). The config it carries: `resmlp.hub.packaged_config`."""

from __future__ import annotations

import contextlib
import copy
import warnings
from typing import Callable, Iterator

import torch
from torch import nn

from ..infer_arch import spec_of
from .fuse import fusable, fuse


class ExportError(ValueError):
    """An export that does not reproduce the eager model (or cannot be written)."""


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    # torch.ao's dynamic quantisation and the TorchScript ONNX exporter still work in torch 2.x but warn
    # about their deprecation on every call; the warnings say nothing about the user's model.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def cpu_eval_copy(model: nn.Module) -> nn.Module:
    """The exporters trace on CPU in fp32 and must not move or re-mode the caller's model."""
    return copy.deepcopy(model).cpu().float().eval()


def example_input(model: nn.Module, batch: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, *spec_of(model).input_shape, generator=torch.Generator().manual_seed(seed))


def for_export(model: nn.Module) -> nn.Module:
    """The fused model when it has something to fold (see resmlp.fuse), else the model itself."""
    return fuse(model) if fusable(model) else model


DEFAULT_TOLERANCE = 1e-4


def check_export(
    model: nn.Module,
    run_exported: Callable[[torch.Tensor], torch.Tensor],
    *,
    what: str,
    atol: float = DEFAULT_TOLERANCE,
    batch: int = 3,
) -> float:
    """Max |exported - eager| on random images; ExportError when it exceeds `atol` times the logits' scale,
    max(1, max |eager logit|): float32 rounding grows with the values, so a model with logits of ~350
    legitimately differs by ~3e-4 (1e-6 relative), while logits below 1 are held to `atol` itself."""
    # A batch size other than the one traced with (2) also proves that the batch axis is dynamic.
    x = example_input(model, batch, seed=1)
    with torch.no_grad():
        want = model.eval()(x)
        diff = float((run_exported(x) - want).abs().max())
    scale = max(1.0, float(want.abs().max()))
    if not diff <= atol * scale:
        raise ExportError(
            f"{what} output differs from eager by {diff:.3g} > {atol:g} x logit scale {scale:.3g}; "
            "not written (--tolerance raises the limit)"
        )
    return diff
