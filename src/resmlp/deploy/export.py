"""Ship a model: ONNX (dynamic batch), TorchScript, OpenVINO IR, or a packaged directory for `from_pretrained`.

The packaged directory (config.json in timm's schema + model.safetensors) is written by
`resmlp.hub.save_pretrained`. ONNX and TorchScript files hold the fused model (resmlp.fuse) and carry the
model's config (`resmlp.hub.packaged_config`, format 1) as metadata (ONNX metadata_props["resmlp.config"],
TorchScript extra file "config.json").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..files import write_atomic
from ..hub.packaged import CONFIG_NAME, packaged_config, save_pretrained
from ..models import Preprocess
from .onnx import export_onnx, onnxruntime_module
from .openvino import export_openvino
from .trace import DEFAULT_TOLERANCE, check_export, cpu_eval_copy, example_input, for_export, quiet

EXPORT_FORMATS = ("onnx", "torchscript", "safetensors", "openvino")


def export_torchscript(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    config: dict[str, Any] | None = None,
    check: bool = True,
    atol: float = 1e-4,
) -> float | None:
    """Trace the fused `model` to TorchScript (loadable with torch.jit.load, no resmlp needed).

    TorchScript is deprecated upstream in favour of torch.export but still the format many C++ and
    mobile runtimes load. Returns the max |difference| from eager when `check`.
    """
    model = cpu_eval_copy(model)
    extra = {CONFIG_NAME: json.dumps(config or packaged_config(model, version=1))}
    diff = None

    def write(tmp: Path) -> None:
        nonlocal diff
        with quiet(), torch.no_grad():
            traced = torch.jit.trace(for_export(model), example_input(model, 2))
            torch.jit.save(traced, str(tmp), _extra_files=extra)
            if check:
                loaded = torch.jit.load(str(tmp))
                diff = check_export(model, lambda x: loaded(x), what="TorchScript", atol=atol)

    write_atomic(path, write)
    return diff


def export_model(
    model: nn.Module,
    fmt: str,
    out: str | os.PathLike,
    *,
    preprocess: Preprocess | None = None,
    classes: Sequence[str] | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
    precision: str = "fp32",
    calibration: torch.Tensor | None = None,
) -> tuple[Path, float | None]:
    """Dispatch on `fmt` (onnx | torchscript | safetensors | openvino); returns (written path, max diff or None).
    `tolerance`: the check's limit relative to the logits' scale (see `check_export`). `precision` int8 (with
    `calibration` images) writes an int8 OpenVINO IR."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "safetensors":
        return save_pretrained(model, out, preprocess=preprocess, classes=classes), None
    config = packaged_config(model, preprocess=preprocess, classes=classes, version=1)
    if fmt == "openvino":
        diff = export_openvino(model, out, config=config, precision=precision, calibration=calibration, atol=tolerance)
        return Path(out), diff
    if precision != "fp32":
        raise ValueError(f"an {fmt} export is fp32; int8 is written as an OpenVINO IR (--format openvino)")
    if fmt == "onnx":
        onnxruntime_module()  # fail early with an install hint
        return Path(out), export_onnx(model, out, config=config, atol=tolerance)
    return Path(out), export_torchscript(model, out, config=config, atol=tolerance)
