"""Inference and deployment: fused model, precision/runtime choice, export, predict, benchmark.

`load_any(weights)` is the one place that turns whatever the user points at into a model:
    our checkpoint file or run directory -> model_from_checkpoint (carries preprocessing + class names)
    a packaged directory (config.json)   -> from_pretrained
    a bare .pth/.pt/.safetensors         -> deit/timm state dict; architecture from the shapes
                                            (infer_architecture) or `model_name`; the variant's default
                                            preprocessing and class names class_0, class_1, ...
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from torch import nn

from ..checkpoint import model_from_checkpoint, read_checkpoint
from ..models import Preprocess, create_model
from ..weights import WeightsError, convert_state_dict, load_weights, read_state_dict
from .export import CONFIG_NAME, export_model, export_onnx, export_torchscript, from_pretrained, save_pretrained
from .fuse import FusedClassifier, fuse
from .infer_arch import infer_architecture, input_shape, shape_args
from .optimize import OnnxRuntimeModel, OptimizedModel, build_runtime, optimize, resolve_precision


def load_any(weights: str | os.PathLike | Mapping, model_name: str | None = None
             ) -> tuple[nn.Module, Preprocess, list[str]]:
    """(model in eval mode, preprocessing, class names) from a checkpoint, run dir, packaged dir or state dict."""
    path = None if isinstance(weights, Mapping) else Path(weights)
    if path is not None and not path.exists():
        raise WeightsError(f"{path}: no such file or directory")
    if path is not None and path.is_dir():
        model = from_pretrained(path) if (path / CONFIG_NAME).is_file() else model_from_checkpoint(read_checkpoint(path))
    elif path is not None and path.suffix != ".safetensors" and (ckpt := _our_checkpoint(path)) is not None:
        model = model_from_checkpoint(ckpt)
    else:
        model = _from_state_dict(weights, model_name)
    if model_name is not None and getattr(model, "model_name", model_name) != model_name:
        raise WeightsError(f"{weights} holds {model.model_name}, not {model_name}; drop --model or fix it")
    classes = list(getattr(model, "classes", None) or [f"class_{i}" for i in range(model.num_classes)])
    if len(classes) != model.num_classes:
        raise WeightsError(f"{weights}: {len(classes)} class names for a {model.num_classes}-class head")
    return model.eval(), model.preprocess, classes


def _our_checkpoint(path: Path) -> dict | None:
    """The checkpoint dict if `path` is one of ours, None if it is some other weights file."""
    try:
        return read_checkpoint(path)
    except WeightsError as e:
        if "not a resmlp checkpoint" in str(e):
            return None
        raise


def _from_state_dict(weights: str | os.PathLike | Mapping, model_name: str | None) -> nn.Module:
    sd = convert_state_dict(read_state_dict(weights), to="timm")
    if model_name is None:
        model_name, overrides = infer_architecture(sd)
    else:  # the user named the variant: only the plain overrides come from the shapes
        try:
            found = shape_args(sd)[1]
            overrides = {k: found[k] for k in ("img_size", "num_classes", "in_chans")}
        except WeightsError:  # not a patch model (a ResNet teacher): take the variant as registered
            overrides = {}
    model = create_model(model_name, **overrides)
    return load_weights(model, sd)


__all__ = [
    "FusedClassifier", "OnnxRuntimeModel", "OptimizedModel", "build_runtime", "export_model", "export_onnx",
    "export_torchscript", "from_pretrained", "fuse", "infer_architecture", "input_shape", "load_any", "optimize",
    "resolve_precision", "save_pretrained",
]
