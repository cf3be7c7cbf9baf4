"""Precision and runtime for inference: fp32 / bf16 / int8, eager / torch.compile / ONNX Runtime / OpenVINO.

Every path is wrapped so that callers see one contract: float32 images (B, C, H, W) in, float32 logits
(B, num_classes) out, no autograd.
"""

from __future__ import annotations

import contextlib
import copy

import torch
from torch import nn

from ..device import auto_precision
from .fuse import FusedClassifier, fusable, fuse
from .onnx import onnx_runtime_model
from .openvino import openvino_model

PRECISIONS = ("fp32", "bf16", "int8")
RUNTIMES = ("eager", "compile", "onnx", "openvino")


def resolve_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """'auto' -> the fastest precision that keeps predictions on `device`: bf16 where native, else fp32."""
    if precision == "auto":
        return auto_precision(precision, device)
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of auto, {', '.join(PRECISIONS)}")
    return precision


class OptimizedModel(nn.Module):
    """Float32 images in, float32 logits out; `inner` runs in `dtype` (bf16 keeps weights in bf16)."""

    def __init__(
        self, inner: nn.Module, *, dtype: torch.dtype, device: torch.device, precision: str, runtime: str
    ) -> None:
        super().__init__()
        self.inner, self.dtype, self.device = inner, dtype, device
        self.precision, self.runtime = precision, runtime

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self._compile_config():
            return self.inner(images.to(self.device, self.dtype)).float()

    def _compile_config(self) -> contextlib.AbstractContextManager:
        if self.runtime != "compile":
            return contextlib.nullcontext()
        # Compilation is lazy (first call, and each new batch size), so the config must be in force at
        # call time. Freezing turns the weights into constants: Inductor then pre-packs them for oneDNN
        # and fuses bias + GELU into the GEMMs (torch.compile(options=...) does not reach this pass).
        import torch._inductor.config as inductor_config

        return inductor_config.patch(freezing=True)

    def extra_repr(self) -> str:
        return f"precision={self.precision}, runtime={self.runtime}"


# int8 is run by the engines (measured: docs/results.md#inference); PyTorch's own dynamic int8 (torch.ao, a
# deprecated API) kept as many predictions as OpenVINO's at a quarter of its speed, and is not offered.
INT8_ELSEWHERE = (
    "int8 runs on the openvino runtime (pip install 'resmlp[openvino]'; the fastest int8 measured) or the onnx "
    "runtime (pip install 'resmlp[onnx]'), not in PyTorch eager or compile"
)


def optimize(model: nn.Module, precision: str = "auto", compile: bool = False) -> OptimizedModel:
    """Fuse `model` (see `resmlp.fuse`; models without Aff/LayerNorm to fold, such as the CIFAR ResNets,
    are copied as they are) and run it at `precision`, optionally through torch.compile.

    precision: "fp32"; "bf16" (weights and activations in bfloat16); or "auto" = bf16 where the hardware has
    native bf16 matmul, fp32 elsewhere (int8: `build_runtime(..., runtime="openvino" | "onnx")`). `compile=True`
    runs the fused model through torch.compile with weight freezing (the first call compiles, which takes a
    while). The original model is not modified.
    """
    device = next(model.parameters()).device
    precision = resolve_precision(precision, device)
    if precision == "int8":
        raise ValueError(INT8_ELSEWHERE)
    # fuse() builds a new module; anything else is copied, so the casts below never touch `model`.
    fresh = fusable(model) and not isinstance(model, FusedClassifier)
    inner = fuse(model) if fresh else copy.deepcopy(model).eval().requires_grad_(False)
    dtype = torch.float32
    if precision == "bf16":
        dtype = torch.bfloat16
        inner = inner.to(torch.bfloat16)
    if compile:  # weight freezing is switched on around each call, see OptimizedModel._compile_config
        # dynamic=False: one static graph per batch size, faster than a shape-generic one.
        inner = torch.compile(inner, dynamic=False)
    return OptimizedModel(
        inner, dtype=dtype, device=device, precision=precision, runtime="compile" if compile else "eager"
    )


def default_runtime(precision: str) -> str:
    """The runtime the CLI uses when none is named: OpenVINO for int8, PyTorch eager otherwise."""
    return "openvino" if precision == "int8" else "eager"


def build_runtime(
    model: nn.Module,
    *,
    precision: str = "auto",
    runtime: str = "eager",
    threads: int | None = None,
    calibration: torch.Tensor | None = None,
) -> nn.Module:
    """One entry for the CLI: `runtime` in eager | compile | onnx | openvino, `precision` in auto | fp32 | bf16 |
    int8 (int8: openvino or onnx); `calibration` images (B, C, H, W), a few hundred typical preprocessed training
    images, are used by int8 only: the channel MLPs are smoothed on them (`quantize.smooth`), and OpenVINO's int8
    is calibrated on them (it needs them)."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if runtime == "onnx":
        return onnx_runtime_model(model, precision, threads=threads, calibration=calibration)
    if runtime == "openvino":
        return openvino_model(model, precision, threads=threads, calibration=calibration)
    return optimize(model, precision, compile=runtime == "compile")
