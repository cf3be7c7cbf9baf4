"""Ship a model: ONNX (dynamic batch), TorchScript, or a packaged directory for `from_pretrained`.

Packaged directory (the layout Hugging Face Hub and timm users expect):
    config.json          timm's schema (architecture, num_classes, model_args, pretrained_cfg, label_names;
                         see resmlp.models.timm_config) plus our spec under "resmlp"
    model.safetensors    the unfused weights in timm's key layout (so timm and fine-tuning can use them)
ONNX and TorchScript files hold the fused model (resmlp.fuse) and carry the same config as metadata
(ONNX metadata_props["resmlp.config"], TorchScript extra file "config.json").
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..files import write_atomic, write_text_atomic
from ..infer_arch import spec_of
from ..loading import CONFIG_NAME, PRETRAINED_FORMAT, WEIGHTS_NAME, read_packaged
from ..models import Preprocess, to_timm_config
from .onnx import export_onnx, onnxruntime_module
from .trace import (
    DEFAULT_TOLERANCE,
    ExportError,
    check_export,
    cpu_eval_copy,
    example_input,
    for_export,
    model_config,
    quiet,
)

EXPORT_FORMATS = ("onnx", "torchscript", "safetensors")


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike,
    *,
    preprocess: Preprocess | None = None,
    classes: Sequence[str] | None = None,
) -> Path:
    """Write `directory`/config.json and `directory`/model.safetensors; returns the directory."""
    from safetensors.torch import save_file

    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out} exists and is not a directory; a packaged model is a folder")
    spec = spec_of(model)
    spec = spec.replace(preprocess=preprocess or spec.preprocess, classes=classes or spec.class_names())
    config = to_timm_config(spec, num_features=model.num_features)
    config["resmlp"].update(format=PRETRAINED_FORMAT, format_version=2)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomic(out / WEIGHTS_NAME, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    # config last: a directory with a config always has its weights
    write_text_atomic(out / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return out


def from_pretrained(directory: str | os.PathLike) -> nn.Module:
    """Load a packaged model directory (or its config.json), ours or a timm Hub directory: the model in
    eval mode with `model.spec` (preprocessing, class names) from the config."""
    return read_packaged(directory)


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
    extra = {"config.json": json.dumps(config or model_config(model))}
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
) -> tuple[Path, float | None]:
    """Dispatch on `fmt` (onnx | torchscript | safetensors); returns (written path, max diff or None).
    `tolerance`: the check's limit relative to the logits' scale (see `check_export`)."""
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt == "safetensors":
        return save_pretrained(model, out, preprocess=preprocess, classes=classes), None
    config = model_config(model, preprocess=preprocess, classes=classes)
    if fmt == "onnx":
        onnxruntime_module()  # fail early with an install hint
        return Path(out), export_onnx(model, out, config=config, atol=tolerance)
    return Path(out), export_torchscript(model, out, config=config, atol=tolerance)
