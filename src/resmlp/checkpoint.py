"""Our checkpoint files: self-describing (a file alone rebuilds the model), written atomically.

Layout of a checkpoint (a dict; loadable with `torch.load(weights_only=True)`):
    format        "resmlp-checkpoint"
    model         state dict (timm layout)
    model_name    registered variant name, e.g. "resmlp_tiny32"          } ModelSpec.to_dict(): the
    model_args    every constructor argument (img_size, num_classes, ...) } model's spec, so a file
    preprocess    {img_size, crop_pct, interpolation, mean, std}          } alone rebuilds the model
    classes       class names, index = label id                           } and feeds it images
    plus whatever the writer adds (config, epoch, step, optimizer, schedule, ema, rng, metrics, teacher).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn

from .files import write_atomic
from .infer_arch import spec_of
from .models import ModelSpec, Preprocess
from .rundir import RESUME_NAMES, RunDir
from .weights import WeightsError, load_weights, torch_load_safely

FORMAT = "resmlp-checkpoint"
TEXT_FORMAT = "resmlp-text-checkpoint"  # a translator or language model (train/text.py; other layout)


def atomic_save(obj: Any, path: str | os.PathLike, *, keep_previous: str | os.PathLike | None = None) -> Path:
    """torch.save through the atomic writer: a crash never leaves half a checkpoint."""
    return write_atomic(path, lambda tmp: torch.save(obj, tmp), keep_previous=keep_previous)


def latest_checkpoint(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The newest checkpoint of a run that loads (by epoch and step): checkpoints/last.pt, or previous.pt
    when last.pt is missing or damaged (a warning names the one skipped)."""
    folder = RunDir(run_dir).checkpoints
    found, problems = [], []
    for name in RESUME_NAMES:
        if not (folder / name).is_file():
            continue
        try:
            found.append(read_checkpoint(folder / name))
        except WeightsError as e:
            problems.append(str(e))
    if not found:
        why = f" ({'; '.join(problems)})" if problems else ""
        raise WeightsError(f"{run_dir}: no loadable checkpoint to resume from in {folder}{why}")
    for problem in problems:
        warnings.warn(f"skipped a damaged checkpoint: {problem}", stacklevel=2)
    return max(found, key=lambda c: (c.get("epoch", 0), c.get("step", 0)))


def model_record(
    model: nn.Module, *, classes: Sequence[str] | None = None, preprocess: Preprocess | None = None
) -> dict[str, Any]:
    """The part of a checkpoint that rebuilds `model`: format, weights and the model's spec
    (`classes` / `preprocess`, when given, replace the spec's; see `spec_of`)."""
    spec = spec_of(model, preprocess=preprocess, classes=classes)
    return {"format": FORMAT, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}, **spec.to_dict()}


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load one of our checkpoints, or a run directory's best/last one (no pickled code is executed)."""
    path = Path(path)
    if path.is_dir():  # a run directory
        for cand in (RunDir(path).best, RunDir(path).last):
            if cand.is_file():
                path = cand
                break
        else:
            raise WeightsError(f"{path}: run directory has no checkpoints/best.pt or checkpoints/last.pt")
    if not path.is_file():
        raise WeightsError(f"{path}: no such checkpoint file")
    ckpt = torch_load_safely(path)
    if not isinstance(ckpt, Mapping) or ckpt.get("format") != FORMAT:
        raise WeightsError(
            f"{path}: not a resmlp checkpoint (no format={FORMAT!r}); use load_weights for plain weights"
        )
    ckpt["path"] = str(path)
    return dict(ckpt)


def model_from_checkpoint(ckpt: Mapping[str, Any], *, weights: str = "model") -> nn.Module:
    """Rebuild the model a checkpoint describes and load its weights (`weights="ema"` for the EMA copy)."""
    try:
        spec = ModelSpec.from_dict(ckpt)
    except ValueError as e:
        raise WeightsError(f"{ckpt.get('path', 'checkpoint')}: {e}") from None
    if ckpt.get(weights) is None:
        raise WeightsError(f"{ckpt.get('path', 'checkpoint')}: has no {weights!r} weights")
    return load_weights(spec.build(), ckpt[weights])
