"""The one loader: whatever weights a user points a command at -> a model with its `spec`.

Sources, tried in this order (every command that takes weights uses `load_model`):
    packaged directory (config.json + model.safetensors, written by `resmlp export --format safetensors`,
                                     or a timm Hub directory; see resmlp.hub.packaged)
    run directory                 -> checkpoints/best.pt, else checkpoints/last.pt
    VARIANT.TAG (no such path)    -> published weights by name (resmlp.hub), e.g. resmlp_s12.fb_in1k
    our checkpoint file           -> the model, preprocessing and class names it describes
    a bare .pth/.pt/.safetensors  -> deit/timm state dict; the architecture from the tensor shapes (or
                                     `model_name`), the variant's default preprocessing, no class names
and the one rule for matching an image folder's classes to a model (`folder_dataset`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from torch import nn

from .checkpoint import model_from_checkpoint, read_checkpoint
from .data.datasets import ImageDataset, scan_image_folder
from .data.transforms import eval_transform_from
from .hub.download import create_model as create_pretrained
from .hub.packaged import CONFIG_NAME, from_pretrained, packaged_weights
from .infer_arch import infer_architecture, shape_args
from .models import VARIANTS, ModelSpec, create_model
from .models.layers import to_pair
from .models.resample import DEFAULT_METHOD
from .rundir import run_of_checkpoint
from .weights import WeightsError, convert_state_dict, load_weights, read_state_dict


@dataclass
class Loaded:
    """A loaded model (eval mode, `model.spec` set) and where it came from."""

    model: nn.Module
    path: Path  # the file actually read (a run directory resolves to its checkpoint)
    checkpoint: Optional[dict[str, Any]] = None  # our checkpoint's record (epoch, best_val_top1, ...) if one

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    @property
    def run_dir(self) -> Optional[Path]:
        """The run directory when the weights came from `<run>/checkpoints/*.pt`."""
        return run_of_checkpoint(self.path) if self.checkpoint else None


def load_model(
    source: str | os.PathLike | Mapping,
    *,
    model_name: str | None = None,
    weights: str = "model",
    key: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    img_size: int | Sequence[int] | None = None,
    resample: str = DEFAULT_METHOD,
) -> Loaded:
    """Load `source` (see the module docstring). `model_name` names the variant a bare state dict holds
    (and must match what a checkpoint holds); `weights="ema"` picks a checkpoint's EMA weights; `key`
    picks an entry of a bare weights file; `overrides` (img_size, num_classes) apply to bare state dicts.
    `img_size` (an int or (h, w)) carries the loaded model to that input size (`set_input_size`, token
    mixing resampled with method `resample`); its spec, hence its preprocessing, follows."""
    if isinstance(source, Mapping):
        loaded = Loaded(_from_state_dict(source, model_name, key, overrides), Path("<state dict>"))
    else:
        loaded = _from_path(Path(source), model_name, weights, key, overrides)
    if model_name is not None and loaded.spec.name != model_name:
        raise WeightsError(f"{source} holds {loaded.spec.name}, not {model_name}; drop --model or fix it")
    if loaded.spec.classes is not None and len(loaded.spec.classes) != loaded.spec.num_classes:
        raise WeightsError(
            f"{source}: {len(loaded.spec.classes)} class names for a {loaded.spec.num_classes}-class head"
        )
    if img_size is not None and to_pair(img_size) != loaded.spec.input_shape[1:]:
        if not hasattr(loaded.model, "set_input_size"):
            raise WeightsError(f"{source}: {loaded.spec.name} is not a patch model; it cannot change its input size")
        try:
            loaded.model.set_input_size(img_size, method=resample)
        except ValueError as e:
            raise WeightsError(f"{source}: {e}") from None
    loaded.model.eval()
    return loaded


def finetune_weights(source: str | os.PathLike) -> Path | dict[str, Any]:
    """What `load_weights` reads to start a fine-tuning run from `source`: a weights or checkpoint file as it is
    (any layout); published weights by name (VARIANT.TAG, through the Hub cache), a run directory or a packaged
    directory through `load_model`, as a state dict."""
    path = Path(source)
    if path.is_file():
        return path
    return load_model(path).model.state_dict()


def _from_path(
    path: Path, model_name: str | None, weights: str, key: str | None, overrides: Mapping[str, Any] | None
) -> Loaded:
    if not path.exists():
        published = _published_name(str(path))
        if published is not None:  # NAME.TAG: published weights by name, through the Hub cache
            return Loaded(create_pretrained(published[0], pretrained=published[1]).eval(), path)
        raise WeightsError(f"{path}: no such file or directory (nor a published model such as resmlp_s12.fb_in1k)")
    if path.is_dir() and (path / CONFIG_NAME).is_file():
        return Loaded(from_pretrained(path), packaged_weights(path))
    ckpt = read_checkpoint(path) if path.is_dir() else None if path.suffix == ".safetensors" else _our_checkpoint(path)
    if ckpt is not None:
        return Loaded(model_from_checkpoint(ckpt, weights=weights), Path(ckpt["path"]), ckpt)
    return Loaded(_from_state_dict(path, model_name, key, overrides), path)


def _published_name(text: str) -> Optional[tuple[str, str]]:
    """(variant, tag) when `text` is VARIANT.TAG of published weights, e.g. resmlp_s12.fb_distilled_in1k."""
    name, _, tag = text.partition(".")
    return (name, tag) if name in VARIANTS and tag in VARIANTS[name].weights else None


def _our_checkpoint(path: Path) -> Optional[dict[str, Any]]:
    """The record if `path` is one of our checkpoints, None if it is some other weights file."""
    try:
        return read_checkpoint(path)
    except WeightsError as e:
        if "not a resmlp checkpoint" in str(e):
            return None
        raise


def _from_state_dict(
    source: str | os.PathLike | Mapping, model_name: str | None, key: str | None, overrides: Mapping[str, Any] | None
) -> nn.Module:
    sd = convert_state_dict(read_state_dict(source, key=key), to="timm")
    if model_name is None:  # the architecture from the tensor shapes
        model_name, found = infer_architecture(sd)
    else:  # the user named the variant: only the plain overrides come from the shapes
        try:
            args = shape_args(sd)[1]
            found = {k: args[k] for k in ("img_size", "num_classes", "in_chans")}
        except WeightsError:  # not a patch model (a ResNet teacher): take the variant as registered
            found = {}
    model = create_model(model_name, **{**found, **{k: v for k, v in (overrides or {}).items() if v is not None}})
    return load_weights(model, sd)


def folder_dataset(root: str | os.PathLike, spec: ModelSpec, *, on_bad: str = "skip") -> ImageDataset:
    """An image folder root/<class>/* prepared as `spec` says, labelled with the model's label ids.

    The one rule for matching classes: every class folder must be one of the model's classes (by name;
    a folder may hold a subset, in any order). A model without class names (a bare state dict) takes the
    sorted folder names as its classes 0..k-1, so k may not exceed its outputs.
    """
    paths, labels, folder_classes = scan_image_folder(root)
    classes = spec.class_names()
    if spec.classes is None:
        if len(folder_classes) > spec.num_classes:
            raise ValueError(
                f"{root}: {len(folder_classes)} class folders but the model has {spec.num_classes} outputs"
            )
        classes = list(folder_classes) + classes[len(folder_classes) :]
    unknown = [c for c in folder_classes if c not in classes]
    if unknown:
        raise ValueError(
            f"{root}: class folders {', '.join(unknown[:5])} are not among the model's classes "
            f"({', '.join(classes[:10])}{'...' if len(classes) > 10 else ''})"
        )
    remap = [classes.index(c) for c in folder_classes]  # folder label -> model label
    return ImageDataset(
        [(p, remap[y]) for p, y in zip(paths, labels)],
        transform=eval_transform_from(spec.preprocess),
        on_bad=on_bad,
        classes=classes,
    )
