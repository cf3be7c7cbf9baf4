"""The packaged model directory, written by `save_pretrained` and read by `from_pretrained` (the layout
Hugging Face Hub and timm users expect; `resmlp export --format safetensors` and `push_to_hub` write it):

    config.json          timm's schema (architecture, num_classes, model_args, pretrained_cfg, label_names;
                         see resmlp.models.timm_config) plus our spec under "resmlp" (format 2)
    model.safetensors    the unfused weights in timm's key layout (so timm and fine-tuning can use them)
    README.md            the model card, when published (see `publish`)

`packaged_config` is the one writer of the config every export carries: config.json here, and (as the flat
format 1) the metadata of ONNX and TorchScript files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from ..files import write_atomic, write_text_atomic
from ..infer_arch import spec_of
from ..models import ModelSpec, Preprocess, from_timm_config, to_timm_config
from ..weights import WeightsError, load_weights

PRETRAINED_FORMAT = "resmlp-pretrained"
FORMAT_VERSION = 2  # 1: our spec at the root (ONNX / TorchScript metadata, older directories); 2: timm's schema
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TIMM_BIN_NAME = "pytorch_model.bin"  # what timm's save_for_hf writes without safe_serialization
CARD_NAME = "README.md"


def packaged_config(
    model: nn.Module,
    *,
    preprocess: Preprocess | None = None,
    classes: Sequence[str] | None = None,
    version: int = FORMAT_VERSION,
) -> dict[str, Any]:
    """The config an export of `model` carries: its spec (`preprocess` / `classes` replace its own; class
    names default to class_0, class_1, ...) with the packaged-format header. `version=2` is timm's schema
    (config.json), `version=1` the flat spec that ONNX and TorchScript files carry."""
    spec = spec_of(model, preprocess=preprocess, classes=classes or None)
    spec = spec.replace(classes=spec.class_names())
    if version == 1:
        return {
            "format": PRETRAINED_FORMAT,
            "format_version": 1,
            "architectures": [type(model).__name__],
            "arch": spec.arch,
            **spec.to_dict(),
            "num_classes": spec.num_classes,
        }
    if version != FORMAT_VERSION:
        raise ValueError(f"packaged format version {version}: expected 1 or {FORMAT_VERSION}")
    config = to_timm_config(spec, num_features=model.num_features)
    config["resmlp"].update(format=PRETRAINED_FORMAT, format_version=FORMAT_VERSION)
    return config


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
        raise NotADirectoryError(f"{out} exists and is not a directory; a packaged model is a folder")
    config = packaged_config(model, preprocess=preprocess, classes=classes)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_atomic(out / WEIGHTS_NAME, lambda p: save_file(tensors, str(p), metadata={"format": "pt"}))
    # config last: a directory with a config always has its weights
    write_text_atomic(out / CONFIG_NAME, json.dumps(config, indent=2) + "\n")
    return out


def from_pretrained(directory: str | os.PathLike) -> nn.Module:
    """A packaged model directory (or its config.json) -> the model in eval mode with `model.spec`
    (preprocessing, class names) from the config.

    Reads ours (timm's config.json schema with our spec under "resmlp"; also the older format-1 config)
    and timm's own Hub directories (config.json + model.safetensors or pytorch_model.bin) of the
    architectures resmlp builds (see `resmlp.models.timm_config`)."""
    path = Path(directory)
    folder = path.parent if path.name == CONFIG_NAME else path
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise WeightsError(
            f"{folder}: not a packaged model (no {CONFIG_NAME}); "
            f"create one with `resmlp export WEIGHTS --format safetensors --out DIR`"
        )
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise WeightsError(f"{config_path}: invalid JSON ({e})") from None
    try:
        spec = _spec_of_config(config)
    except ValueError as e:
        raise WeightsError(f"{config_path}: {e}") from None
    return load_weights(spec.build(), packaged_weights(folder)).eval()


def packaged_weights(folder: str | os.PathLike) -> Path:
    """The weights file of a packaged directory: ours (model.safetensors) or timm's pytorch_model.bin."""
    folder = Path(folder)
    return next((folder / n for n in (WEIGHTS_NAME, TIMM_BIN_NAME) if (folder / n).is_file()), folder / WEIGHTS_NAME)


def _spec_of_config(config: Any) -> ModelSpec:
    if isinstance(config, dict) and config.get("format") == PRETRAINED_FORMAT:  # format 1 (ours, pre-timm)
        return ModelSpec.from_dict(config)
    if isinstance(config, dict) and "architecture" in config:  # timm's schema (ours since format 2)
        return from_timm_config(config)
    found = config.get("format") if isinstance(config, dict) else None
    raise ValueError(
        f"not a resmlp config (format={found!r}, expected {PRETRAINED_FORMAT!r}) nor a timm config (no 'architecture')"
    )
