"""Our checkpoint files: self-describing (a file alone rebuilds the model), written atomically.

Layout of a checkpoint (a dict; loadable with `torch.load(weights_only=True)`):
    format        "resmlp-checkpoint"
    model         state dict (timm layout)
    model_name    registered variant name, e.g. "resmlp_tiny32"
    model_args    every constructor argument (so overrides such as img_size/num_classes survive)
    preprocess    {img_size, crop_pct, interpolation, mean, std} used to train/evaluate it
    classes       class names, index = label id
    plus whatever the writer adds (config, epoch, step, optimizer, schedule, ema, rng, metrics, teacher).
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .models import Preprocess, create_model
from .models.registry import VARIANTS
from .weights import WeightsError, load_weights

FORMAT = "resmlp-checkpoint"


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to a temp file in the same folder, fsync, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    return path


def model_record(model: nn.Module, *, classes: list[str] | None = None,
                 preprocess: Preprocess | None = None) -> dict[str, Any]:
    """The part of a checkpoint that rebuilds `model`: weights, architecture, preprocessing, class names."""
    pre = preprocess or getattr(model, "preprocess", Preprocess())
    return {
        "format": FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "model_name": getattr(model, "model_name", None),
        "model_args": dict(getattr(model, "model_args", {})),
        "preprocess": {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(pre).items()},
        "classes": list(classes) if classes is not None else None,
    }


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load one of our checkpoints (no pickled code is executed)."""
    path = Path(path)
    if path.is_dir():  # a run directory
        for cand in (path / "checkpoints" / "best.pt", path / "checkpoints" / "last.pt"):
            if cand.is_file():
                path = cand
                break
        else:
            raise WeightsError(f"{path}: run directory has no checkpoints/best.pt or checkpoints/last.pt")
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a user-facing file problem
        raise WeightsError(f"{path}: not a loadable checkpoint ({str(e).strip().splitlines()[0]})") from None
    if not isinstance(ckpt, Mapping) or ckpt.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a resmlp checkpoint (no format={FORMAT!r}); use load_weights for plain weights")
    ckpt["path"] = str(path)
    return dict(ckpt)


def preprocess_from_record(record: Mapping[str, Any]) -> Preprocess:
    p = dict(record.get("preprocess") or {})
    for k in ("mean", "std"):
        if k in p:
            p[k] = tuple(p[k])
    return Preprocess(**p)


def model_from_checkpoint(ckpt: Mapping[str, Any], *, weights: str = "model") -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (`weights="ema"` for the EMA copy)."""
    name, args = ckpt.get("model_name"), dict(ckpt.get("model_args") or {})
    if name not in VARIANTS:
        raise WeightsError(f"checkpoint names an unknown model {name!r}")
    model = create_model(name, **args)
    if weights not in ckpt or ckpt[weights] is None:
        raise WeightsError(f"checkpoint has no {weights!r} weights")
    load_weights(model, ckpt[weights])
    model.preprocess = preprocess_from_record(ckpt)
    model.classes = ckpt.get("classes")
    return model
